-- Template builds: a recipe run step by step in a build capsule, queued
-- here and taken by any replica's workers (`FOR UPDATE SKIP LOCKED`, with a
-- lease and a fencing attempt number).

CREATE TABLE builds (
    id              TEXT PRIMARY KEY,
    team_id         TEXT NOT NULL REFERENCES teams (id),
    created_by      TEXT,
    -- The template the build makes (unique within the team).
    name            TEXT NOT NULL,
    base            TEXT NOT NULL,
    base_template_id TEXT REFERENCES templates (id) ON DELETE SET NULL,
    recipe          TEXT NOT NULL,
    overwrite       BOOLEAN NOT NULL DEFAULT FALSE,
    vcpus           INTEGER,
    memory_mb       INTEGER,
    status          TEXT NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    error           TEXT,
    -- Who works on it: the replica's worker id, until `lease_until`;
    -- `attempts` is the fencing token every write of that worker checks.
    worker          TEXT,
    lease_until     TIMESTAMPTZ,
    attempts        INTEGER NOT NULL DEFAULT 0,
    host_id         TEXT REFERENCES hosts (id),
    -- The build capsule while one exists.
    capsule_id      TEXT,
    -- The result.
    template_id     TEXT REFERENCES templates (id) ON DELETE SET NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at      TIMESTAMPTZ,
    finished_at     TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX builds_team ON builds (team_id, created_at DESC);
CREATE INDEX builds_open ON builds (created_at) WHERE status IN ('queued', 'running');
-- One open build per template name and team.
CREATE UNIQUE INDEX builds_open_name ON builds (team_id, name) WHERE status IN ('queued', 'running');

-- The uploaded archive COPY reads from, kept until the build ends.
CREATE TABLE build_archives (
    build_id TEXT PRIMARY KEY REFERENCES builds (id) ON DELETE CASCADE,
    data     BYTEA NOT NULL
);

-- One row per recipe step, in order.
CREATE TABLE build_steps (
    build_id    TEXT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    line        INTEGER NOT NULL,
    instruction TEXT NOT NULL,
    text        TEXT NOT NULL,
    -- Content hash of (base, steps so far, files COPY reads).
    cache_key   TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'cached', 'done', 'failed', 'cancelled', 'skipped')),
    -- How many times the step was executed (a cached step: 0).
    runs        INTEGER NOT NULL DEFAULT 0,
    exit_code   INTEGER,
    error       TEXT,
    started_at  TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    PRIMARY KEY (build_id, idx)
);

-- The build's log: step output and the worker's own lines, in order.
CREATE TABLE build_logs (
    id       BIGSERIAL PRIMARY KEY,
    build_id TEXT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    step     INTEGER,
    stream   TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
    text     TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX build_logs_build ON build_logs (build_id, id);

-- Layer cache: the filesystem after a step, stored on a host as an agent
-- template, found by the step's cache key (per team).
CREATE TABLE build_cache (
    team_id      TEXT NOT NULL REFERENCES teams (id),
    cache_key    TEXT NOT NULL,
    host_id      TEXT NOT NULL REFERENCES hosts (id),
    agent_name   TEXT NOT NULL,
    build_id     TEXT,
    size_bytes   BIGINT NOT NULL DEFAULT 0,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, cache_key, host_id),
    UNIQUE (host_id, agent_name)
);
CREATE INDEX build_cache_lru ON build_cache (team_id, last_used_at);
