-- Desired state (gateway writes), nodes (scheduler, provisioner, health and reconciler each
-- write their own transitions), the node event log, API keys and usage.

CREATE TABLE deployments (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    model         text NOT NULL,
    replicas      integer NOT NULL CHECK (replicas >= 0),
    engine        text NOT NULL DEFAULT 'sim',
    backend       text NOT NULL DEFAULT 'local',
    accelerator   text,
    use_spot      boolean NOT NULL DEFAULT false,
    max_model_len integer NOT NULL DEFAULT 4096,
    engine_args   jsonb NOT NULL DEFAULT '[]',
    generation    bigint NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE UNIQUE INDEX deployments_live_name ON deployments (name) WHERE deleted_at IS NULL;

CREATE TABLE nodes (
    id             text PRIMARY KEY,
    deployment_id  text NOT NULL REFERENCES deployments (id),
    generation     bigint NOT NULL,
    status         text NOT NULL,
    status_reason  text NOT NULL DEFAULT '',
    spec           jsonb NOT NULL,
    backend        text NOT NULL,
    cluster_name   text,
    endpoint       text,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    launched_at    timestamptz,
    ready_at       timestamptz,
    terminated_at  timestamptz,
    command_sent_at timestamptz,  -- the scheduler's last launch/terminate command for it
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX nodes_live ON nodes (deployment_id)
    WHERE status NOT IN ('terminated', 'launch_failed', 'lost');

CREATE TABLE node_events (
    event_id     text PRIMARY KEY,
    node_id      text NOT NULL,
    type         text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    payload      jsonb NOT NULL
);
CREATE INDEX node_events_node ON node_events (node_id, occurred_at);

CREATE TABLE api_keys (
    id              text PRIMARY KEY,
    prefix          text NOT NULL UNIQUE,
    secret_sha256   bytea NOT NULL,
    name            text NOT NULL,
    scope           text NOT NULL CHECK (scope IN ('admin', 'user')),
    allowed_models  text[],
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);

CREATE TABLE usage (
    request_id         text PRIMARY KEY,
    key_id             text NOT NULL REFERENCES api_keys (id),
    model              text NOT NULL,
    prompt_tokens      integer NOT NULL DEFAULT 0,
    completion_tokens  integer NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_key_time ON usage (key_id, created_at);
