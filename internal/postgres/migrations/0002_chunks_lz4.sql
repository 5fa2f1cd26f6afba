-- Chunks are compressed with lz4 instead of PostgreSQL's default pglz: on
-- the 2-core development machine appending 1,000-entry chunks went from
-- 414k-448k to 611k-640k entries/s (BenchmarkAppend, interleaved runs) with
-- replay unchanged, since pglz compression of each ~160 KiB chunk was most
-- of PostgreSQL's work per append. lz4 needs PostgreSQL 14+ built with it
-- (the Debian and official packages are); elsewhere chunks keep pglz, and
-- only values written after this migration use the new method.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE chunks ALTER COLUMN data SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'chunks.data keeps the default compression: %', SQLERRM;
END
$$;
