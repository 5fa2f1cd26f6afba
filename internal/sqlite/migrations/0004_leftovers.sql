-- The raw chunks a compaction swap left in place, by range: a segment at
-- first_offset now holds their lines, and readers skip them. They are
-- deleted later, many builds' at once in rowid order (Store.collect), so
-- that a page shared by many builds' chunks is rewritten once, not once
-- per build. Creating the table is instant.
CREATE TABLE leftovers (
	build_id     TEXT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
	first_offset INTEGER NOT NULL, -- the segment's first offset
	end_offset   INTEGER NOT NULL, -- the offset after the segment
	PRIMARY KEY (build_id, first_offset)
) STRICT, WITHOUT ROWID;
