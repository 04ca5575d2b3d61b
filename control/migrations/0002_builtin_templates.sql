-- `tiny` is built by every agent on first use, so it exists before any host
-- has reported it: the first create after `warren up` must not race the
-- first host sync.
INSERT INTO templates (id, team_id, name, agent_name, type, size_bytes, shell, protected)
VALUES ('tpl-tiny', NULL, 'tiny', 'tiny', 'base', 0, '/bin/sh -c', TRUE)
ON CONFLICT DO NOTHING;
