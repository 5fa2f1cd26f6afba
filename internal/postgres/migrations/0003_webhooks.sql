-- Webhooks and their transactional outbox. An event is recorded in the
-- transaction that changes the build's status, as one webhook_outbox row
-- per hook that takes it. Servers claim due rows with FOR UPDATE SKIP
-- LOCKED and push next_at ahead by a lease while the attempt runs, so each
-- attempt is made by one server; a server that dies mid-attempt leaves the
-- row to be claimed again once the lease runs out. A row is dropped once
-- delivered or given up; each attempt leaves a webhook_deliveries record.

CREATE TABLE webhooks (
    id         text PRIMARY KEY,
    team       text NOT NULL,
    url        text NOT NULL,
    events     text[] NOT NULL,
    -- Kept as given: every delivery is signed with it.
    secret     text NOT NULL,
    created_at timestamptz NOT NULL
);

-- Events look up their team's hooks; listings are oldest first.
CREATE INDEX webhooks_team ON webhooks (team, created_at, id);

CREATE TABLE webhook_outbox (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   text NOT NULL,
    hook_id    text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    type       text NOT NULL,
    -- No foreign key: retention may delete the build before delivery.
    build_id   text NOT NULL,
    created_at timestamptz NOT NULL,
    -- The exact bytes every attempt sends and signs (bytea, not jsonb,
    -- which would rewrite them).
    body       bytea NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    next_at    timestamptz NOT NULL,
    -- The claim of the attempt under way, if any.
    claim      text,
    UNIQUE (hook_id, event_id)
);

CREATE INDEX webhook_outbox_due ON webhook_outbox (next_at, seq);

CREATE TABLE webhook_deliveries (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hook_id     text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id    text NOT NULL,
    type        text NOT NULL,
    build_id    text NOT NULL,
    attempt     integer NOT NULL,
    -- 0: no answer.
    status_code integer NOT NULL DEFAULT 0,
    error       text NOT NULL DEFAULT '',
    result      text NOT NULL,
    duration_ms bigint NOT NULL,
    at          timestamptz NOT NULL
);

CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (hook_id, seq);
CREATE INDEX webhook_deliveries_at ON webhook_deliveries (at, seq);
