-- Builds, their logs as one row per appended batch, API keys and the server
-- secret. Offsets and counts are bigint because Go's uint64 offsets never
-- come near 2^63.

CREATE TABLE builds (
    id            text PRIMARY KEY,
    template_id   text NOT NULL,
    team          text NOT NULL,
    namespace     text NOT NULL DEFAULT '',
    name          text NOT NULL DEFAULT '',
    version       text NOT NULL DEFAULT '',
    total_steps   bigint,
    max_attempts  bigint,
    -- JSON kept as bytea, byte for byte as given: jsonb would reorder keys.
    metadata      bytea,
    status        text NOT NULL,
    created_at    timestamptz NOT NULL,
    started_at    timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL,
    -- The offset the next entry gets; the only writer is a transaction
    -- holding this row FOR UPDATE.
    next_offset   bigint NOT NULL DEFAULT 0,
    result        bytea,
    last_phase    text NOT NULL DEFAULT '',
    -- The idle clock: creation, then the last append.
    last_activity timestamptz NOT NULL,
    -- Masking needs them on whichever server takes the append.
    secrets       text[] NOT NULL DEFAULT '{}'
) WITH (fillfactor = 80);
-- Every append updates its build's row. No index covers a column an append
-- changes (next_offset, last_activity, updated_at, ...), and the fillfactor
-- leaves room on the page, so those updates stay HOT: no new index entries
-- and no index bloat per append.

-- Listing newest first, overall and per team or template.
CREATE INDEX builds_created ON builds (created_at DESC, id DESC);
CREATE INDEX builds_team_created ON builds (team, created_at DESC, id DESC);
CREATE INDEX builds_template_created ON builds (template_id, created_at DESC, id DESC);
-- LatestBuild of a template version.
CREATE INDEX builds_version_created ON builds (namespace, name, version, created_at DESC, id DESC);
-- The idle sweep looks only at unfinished builds, retention only at
-- finished ones. Unfinished builds are few (the running ones), so the sweep
-- sorts them by last_activity itself rather than index that column.
CREATE INDEX builds_unfinished ON builds (created_at) WHERE finished_at IS NULL;
CREATE INDEX builds_finished ON builds (finished_at) WHERE finished_at IS NOT NULL;

-- One row per appended batch; data is the canonical JSON lines exactly as
-- readers are served, so a replay sends stored bytes without re-encoding.
CREATE TABLE chunks (
    build_id     text NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    first_offset bigint NOT NULL,
    count        integer NOT NULL CHECK (count > 0),
    terminal     boolean NOT NULL DEFAULT false,
    -- The producer's fingerprint of the batch, to recognise a retry.
    hash         bytea,
    data         bytea NOT NULL,
    PRIMARY KEY (build_id, first_offset)
);

CREATE TABLE keys (
    id         text PRIMARY KEY,
    team       text NOT NULL,
    scopes     text[] NOT NULL,
    name       text NOT NULL,
    created_at timestamptz NOT NULL,
    hash       bytea NOT NULL UNIQUE
);

CREATE INDEX keys_created ON keys (created_at, id);

-- A single row; several servers starting at once race to insert it and all
-- read back the winner's.
CREATE TABLE server_secret (
    id     integer PRIMARY KEY CHECK (id = 1),
    secret bytea NOT NULL
);
