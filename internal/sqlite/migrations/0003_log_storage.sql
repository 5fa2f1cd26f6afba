-- Compressed, compacted logs and the size cap. Every change here is
-- instant (new columns with constant defaults, new tables): rows written
-- before it stay readable as they are (codec 0, their size their length),
-- and the background compactor converts finished builds' logs, which
-- also fills in their kept_bytes.

-- codec: 0 raw canonical lines, 1 zstd (internal/segment). size: the
-- uncompressed length, NULL for raw rows (it is length(data)).
ALTER TABLE chunks ADD COLUMN codec INTEGER NOT NULL DEFAULT 0;
ALTER TABLE chunks ADD COLUMN size INTEGER;

-- The hashes of batches that compaction merged into segments, so that a
-- producer's retry of one is still answered as the first time.
CREATE TABLE batch_hashes (
	build_id     TEXT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
	first_offset INTEGER NOT NULL,
	count        INTEGER NOT NULL,
	hash         BLOB NOT NULL,
	PRIMARY KEY (build_id, first_offset)
) STRICT, WITHOUT ROWID;

-- kept_bytes: the log's canonical bytes the store keeps (the size cap's
-- measure). compacted: 1 once a finished build's log is all segments.
-- omitted_*: the range the cap dropped (NULL until it drops anything) and
-- the timestamp of the last entry dropped.
ALTER TABLE builds ADD COLUMN kept_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE builds ADD COLUMN compacted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE builds ADD COLUMN omitted_from INTEGER;
ALTER TABLE builds ADD COLUMN omitted_to INTEGER;
ALTER TABLE builds ADD COLUMN omitted_entries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE builds ADD COLUMN omitted_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE builds ADD COLUMN omitted_ts TEXT NOT NULL DEFAULT '';

-- Running builds are few: their kept bytes are counted now, so the cap
-- holds for them from the first append after the upgrade.
UPDATE builds SET kept_bytes = coalesce((SELECT sum(length(data)) FROM chunks WHERE chunks.build_id = builds.id), 0)
	WHERE finished_at IS NULL;

-- The compactor's queue: finished builds not yet compacted, oldest first.
-- Appends never change a column it covers, so they never touch it.
CREATE INDEX builds_compact ON builds (finished_at, id) WHERE finished_at IS NOT NULL AND compacted = 0;
