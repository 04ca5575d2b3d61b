-- Warren control plane schema. Every row a user can see carries a team_id;
-- every query that serves a user filters on it.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE teams (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    slug       TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ
);

CREATE TABLE team_members (
    team_id   TEXT NOT NULL REFERENCES teams (id),
    user_id   TEXT NOT NULL REFERENCES users (id),
    role      TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON team_members (user_id);

-- API keys: only a SHA-256 of the key is stored; the key is shown once.
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    team_id    TEXT NOT NULL REFERENCES teams (id),
    created_by TEXT REFERENCES users (id),
    name       TEXT NOT NULL,
    key_prefix TEXT NOT NULL,
    key_hash   BYTEA NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used  TIMESTAMPTZ,
    expires_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX api_keys_team ON api_keys (team_id);

-- Hosts run warren-agent. `regular` hosts serve every team; `byoc` hosts
-- belong to one team. Tokens are stored hashed, except the agent token the
-- control plane must present to the agent.
CREATE TABLE hosts (
    id                      TEXT PRIMARY KEY,
    type                    TEXT NOT NULL CHECK (type IN ('regular', 'byoc')),
    team_id                 TEXT REFERENCES teams (id),
    provider                TEXT,
    availability_zone       TEXT,
    arch                    TEXT,
    cpu_cores               INTEGER,
    memory_mb               BIGINT,
    disk_gb                 INTEGER,
    address                 TEXT,
    proxy_address           TEXT,
    backend                 TEXT,
    agent_version           TEXT,
    agent_token             TEXT,
    host_token_hash         BYTEA UNIQUE,
    registration_token_hash BYTEA UNIQUE,
    registration_expires_at TIMESTAMPTZ,
    status                  TEXT NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'online', 'unreachable', 'draining', 'offline')),
    last_heartbeat_at       TIMESTAMPTZ,
    next_sync_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by              TEXT,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at              TIMESTAMPTZ,
    CHECK (type = 'regular' OR team_id IS NOT NULL)
);

CREATE TABLE host_tags (
    host_id TEXT NOT NULL REFERENCES hosts (id),
    tag     TEXT NOT NULL,
    PRIMARY KEY (host_id, tag)
);

-- Templates present on each host, as last reported by its agent.
CREATE TABLE host_templates (
    host_id    TEXT NOT NULL REFERENCES hosts (id),
    agent_name TEXT NOT NULL,
    size_bytes BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (host_id, agent_name)
);

-- Templates: platform ones (team_id NULL, visible to every team) and team
-- snapshots. `agent_name` is the name the agents store it under (unique
-- platform-wide); `name` is what users see (unique within a team).
CREATE TABLE templates (
    id          TEXT PRIMARY KEY,
    team_id     TEXT REFERENCES teams (id),
    name        TEXT NOT NULL,
    agent_name  TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL CHECK (type IN ('base', 'snapshot')),
    vcpus       INTEGER,
    memory_mb   INTEGER,
    size_bytes  BIGINT NOT NULL DEFAULT 0,
    host_id     TEXT REFERENCES hosts (id),
    default_user    TEXT NOT NULL DEFAULT 'user',
    default_workdir TEXT,
    default_env     JSONB NOT NULL DEFAULT '{}',
    shell           TEXT NOT NULL DEFAULT '/bin/bash -l -c',
    protected   BOOLEAN NOT NULL DEFAULT FALSE,
    metadata    JSONB NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX templates_team_name ON templates (COALESCE(team_id, ''), name);

-- Capsules. Lifecycle operations write a transitional status with a lease
-- first, then talk to the agent, then write the final status; a row whose
-- lease ran out (its replica died) is completed by any replica's reconciler.
CREATE TABLE capsules (
    id            TEXT PRIMARY KEY,
    team_id       TEXT NOT NULL REFERENCES teams (id),
    host_id       TEXT REFERENCES hosts (id),
    template_id   TEXT REFERENCES templates (id) ON DELETE SET NULL,
    template      TEXT NOT NULL,
    agent_template TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('starting', 'running', 'pausing', 'paused',
                      'resuming', 'snapshotting', 'stopping', 'stopped', 'missing', 'error')),
    status_before_missing TEXT,
    vcpus         INTEGER NOT NULL,
    memory_mb     INTEGER NOT NULL,
    disk_mb       INTEGER NOT NULL DEFAULT 0,
    timeout_sec   INTEGER NOT NULL DEFAULT 0,
    metadata      JSONB NOT NULL DEFAULT '{}',
    envd_token    TEXT NOT NULL,
    error         TEXT,
    lease_until   TIMESTAMPTZ,
    attempts      INTEGER NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at    TIMESTAMPTZ,
    last_active_at TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at    TIMESTAMPTZ
);
CREATE INDEX capsules_team ON capsules (team_id, created_at DESC);
CREATE INDEX capsules_host ON capsules (host_id) WHERE status NOT IN ('stopped', 'error');
CREATE INDEX capsules_lease ON capsules (lease_until) WHERE lease_until IS NOT NULL;

-- Intervals during which a capsule was running: the source of usage and
-- stats (a capsule's run closes when it pauses, stops or goes missing).
CREATE TABLE capsule_runs (
    id         BIGSERIAL PRIMARY KEY,
    capsule_id TEXT NOT NULL REFERENCES capsules (id),
    team_id    TEXT NOT NULL,
    vcpus      INTEGER NOT NULL,
    memory_mb  INTEGER NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    ended_at   TIMESTAMPTZ
);
CREATE INDEX capsule_runs_team ON capsule_runs (team_id, started_at);
CREATE UNIQUE INDEX capsule_runs_open ON capsule_runs (capsule_id) WHERE ended_at IS NULL;

-- Sampled resource use, pulled from agents (GetMetrics); kept 24 hours.
CREATE TABLE capsule_metrics (
    capsule_id TEXT NOT NULL,
    sampled_at TIMESTAMPTZ NOT NULL,
    cpu_pct    DOUBLE PRECISION NOT NULL,
    mem_bytes  BIGINT NOT NULL,
    disk_bytes BIGINT NOT NULL,
    PRIMARY KEY (capsule_id, sampled_at)
);

CREATE TABLE audit_logs (
    id            BIGSERIAL PRIMARY KEY,
    team_id       TEXT NOT NULL,
    actor_type    TEXT NOT NULL CHECK (actor_type IN ('user', 'api_key', 'host', 'system')),
    actor_id      TEXT,
    actor_name    TEXT,
    resource_type TEXT NOT NULL,
    resource_id   TEXT,
    action        TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('success', 'error')),
    http_status   INTEGER,
    metadata      JSONB NOT NULL DEFAULT '{}',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_team ON audit_logs (team_id, created_at DESC, id DESC);

-- Cluster-wide settings every replica shares (e.g. the JWT signing key, made
-- on first start so replicas agree without configuration).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
