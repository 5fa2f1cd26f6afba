-- Compressed, compacted logs and the size cap. New columns have constant
-- defaults, so adding them rewrites no table and takes its lock only for
-- a moment: rows written before stay readable as they are (codec 0, their
-- size their length), and the background compactor converts finished
-- builds' logs, filling in their kept_bytes as it goes.

-- codec: 0 raw canonical lines, 1 zstd (internal/segment); size: the
-- uncompressed length, NULL for raw rows (octet_length(data)). Segments
-- are compressed already, so PostgreSQL keeps them as they are.
ALTER TABLE chunks ADD COLUMN codec smallint NOT NULL DEFAULT 0;
ALTER TABLE chunks ADD COLUMN size integer;

-- The hashes of batches compaction merged into segments, so a producer's
-- retry of one is still answered as the first time.
CREATE TABLE batch_hashes (
    build_id     text NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    first_offset bigint NOT NULL,
    count        integer NOT NULL,
    hash         bytea NOT NULL,
    PRIMARY KEY (build_id, first_offset)
);

ALTER TABLE builds ADD COLUMN kept_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE builds ADD COLUMN compacted boolean NOT NULL DEFAULT false;
ALTER TABLE builds ADD COLUMN omitted_from bigint;
ALTER TABLE builds ADD COLUMN omitted_to bigint;
ALTER TABLE builds ADD COLUMN omitted_entries bigint NOT NULL DEFAULT 0;
ALTER TABLE builds ADD COLUMN omitted_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE builds ADD COLUMN omitted_ts text NOT NULL DEFAULT '';

-- Running builds are few: their kept bytes are counted now, so the cap
-- holds for them from their next append.
UPDATE builds SET kept_bytes = coalesce((SELECT sum(octet_length(data)) FROM chunks WHERE chunks.build_id = builds.id), 0)
    WHERE finished_at IS NULL;

-- The compactor's queue. Appends assign finished_at its same value, which
-- keeps their updates HOT.
CREATE INDEX builds_compact ON builds (finished_at) WHERE finished_at IS NOT NULL AND NOT compacted;
