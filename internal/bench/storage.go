package bench

import (
	"bytes"
	"context"
	"database/sql"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/klauspost/compress/zstd"

	"buildlog"
	"buildlog/internal/sqlite"
)

// corpusZst is real build output captured on a development machine
// (docs/PERFORMANCE.md says what): one message a line, zstd-compressed.
//
//go:embed testdata/corpus.txt.zst
var corpusZst []byte

// corpus returns the corpus' lines as entry messages: valid UTF-8 and
// under the server's default message limit, as a producer would send
// them.
func corpus() ([]string, error) {
	d, err := zstd.NewReader(nil)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	raw, err := d.DecodeAll(corpusZst, nil)
	if err != nil {
		return nil, fmt.Errorf("corpus: %w", err)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	for i, l := range lines {
		l = strings.ToValidUTF8(l, "\uFFFD")
		if len(l) > buildlog.DefaultMaxMessage {
			l = strings.ToValidUTF8(l[:buildlog.DefaultMaxMessage], "")
		}
		lines[i] = l
	}
	return lines, nil
}

// corpusBatches renders the corpus as append bodies of batch entries
// each, timestamps a millisecond apart from start, levels as the text
// suggests, and returns them with the message bytes they hold.
func corpusBatches(lines []string, batch int, start time.Time) (bodies [][]byte, msgBytes int64) {
	for i := 0; i < len(lines); i += batch {
		var b bytes.Buffer
		b.WriteByte('[')
		for j, l := range lines[i:min(i+batch, len(lines))] {
			if j > 0 {
				b.WriteByte(',')
			}
			level := "info"
			switch low := strings.ToLower(l); {
			case strings.Contains(low, "error"):
				level = "error"
			case strings.Contains(low, "warn"):
				level = "warn"
			}
			ts := start.Add(time.Duration(i+j) * time.Millisecond).UTC().Format("2006-01-02T15:04:05.000Z07:00")
			m, _ := json.Marshal(l)
			fmt.Fprintf(&b, `{"timestamp":%q,"level":%q,"message":%s}`, ts, level, m)
			msgBytes += int64(len(l))
		}
		b.WriteByte(']')
		bodies = append(bodies, b.Bytes())
	}
	return bodies, msgBytes
}

// storageDB looks at a storage run's store from outside its server.
type storageDB interface {
	compacted(ctx context.Context, ids []string) (int, error)
	// buildBytes is the bytes the store holds for one build's log.
	buildBytes(ctx context.Context, id string) (int64, error)
	// inUse is the bytes of the store's pages in use (SQLite) or of its
	// log tables (PostgreSQL), as the server left them.
	inUse(ctx context.Context) (int64, error)
	close()
}

type sqliteDB struct{ db *sql.DB }

// compacted counts the builds compacted whose compaction's leftover raw
// chunks are gone too (a server with the leftovers table deletes them
// once its compactor has caught up; an older one has no such table).
func (s sqliteDB) compacted(ctx context.Context, ids []string) (int, error) {
	var leftovers int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'leftovers'`).Scan(&leftovers); err != nil {
		return 0, err
	}
	q := `SELECT compacted FROM builds WHERE id = ?1`
	if leftovers > 0 {
		q = `SELECT compacted AND NOT EXISTS (SELECT 1 FROM leftovers WHERE build_id = ?1) FROM builds WHERE id = ?1`
	}
	n := 0
	for _, id := range ids {
		var c int
		if err := s.db.QueryRowContext(ctx, q, id).Scan(&c); err != nil {
			return 0, err
		}
		n += c
	}
	return n, nil
}

func (s sqliteDB) buildBytes(ctx context.Context, id string) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT coalesce((SELECT sum(length(data)) FROM chunks WHERE build_id = ?1), 0)
		+ coalesce((SELECT sum(length(hash) + 16) FROM batch_hashes WHERE build_id = ?1), 0)`, id).Scan(&n)
	return n, err
}

func (s sqliteDB) inUse(ctx context.Context) (int64, error) {
	var pages, free, size int64
	for q, v := range map[string]*int64{`PRAGMA page_count`: &pages, `PRAGMA freelist_count`: &free, `PRAGMA page_size`: &size} {
		if err := s.db.QueryRowContext(ctx, q).Scan(v); err != nil {
			return 0, err
		}
	}
	return (pages - free) * size, nil
}

func (s sqliteDB) close() { s.db.Close() }

type pgDB struct{ conn *pgx.Conn }

func (p pgDB) compacted(ctx context.Context, ids []string) (int, error) {
	var n int
	err := p.conn.QueryRow(ctx, `SELECT count(*) FROM builds WHERE compacted AND id = ANY($1)`, ids).Scan(&n)
	return n, err
}

func (p pgDB) buildBytes(ctx context.Context, id string) (int64, error) {
	var n int64
	err := p.conn.QueryRow(ctx, `SELECT coalesce((SELECT sum(pg_column_size(data)) FROM chunks WHERE build_id = $1), 0)
		+ coalesce((SELECT sum(pg_column_size(hash) + 16) FROM batch_hashes WHERE build_id = $1), 0)`, id).Scan(&n)
	return n, err
}

func (p pgDB) inUse(ctx context.Context) (int64, error) {
	var n int64
	err := p.conn.QueryRow(ctx, `SELECT pg_total_relation_size('chunks') + pg_total_relation_size('batch_hashes')`).Scan(&n)
	return n, err
}

func (p pgDB) close() { p.conn.Close(context.Background()) }

// storageStore is one store of the storage scenario: a fresh SQLite
// directory or PostgreSQL database, and a server on it.
type storageStore struct {
	dir, dsn string
	drop     func()
	srv      *server
	db       storageDB
}

func (r *runner) storageStore(ctx context.Context, name string, logCap *buildlog.LogCap) (*storageStore, error) {
	s := &storageStore{}
	var err error
	if r.cfg.Store != "" {
		if s.dsn, s.drop, err = freshDatabase(ctx, r.cfg.Store); err != nil {
			return nil, err
		}
	} else {
		s.dir = filepath.Join(r.tmp, name)
	}
	if len(r.cfg.ServeCommand) > 0 {
		s.srv, err = startChild(ctx, r.cfg.ServeCommand, s.dsn, s.dir, 64, logCap)
	} else {
		s.srv, err = startInProcess(ctx, s.dsn, s.dir, 64, logCap)
	}
	if err != nil {
		s.close()
		return nil, err
	}
	if s.dsn != "" {
		conn, err := pgx.Connect(ctx, s.dsn)
		if err != nil {
			s.close()
			return nil, err
		}
		s.db = pgDB{conn}
	} else {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(s.dir, sqlite.FileName)+"?mode=ro&_pragma=busy_timeout(10000)")
		if err != nil {
			s.close()
			return nil, err
		}
		s.db = sqliteDB{db}
	}
	return s, nil
}

func (s *storageStore) stopServer() {
	if s.srv != nil {
		s.srv.Close()
		s.srv = nil
	}
}

func (s *storageStore) close() {
	if s.db != nil {
		s.db.close()
		s.db = nil
	}
	s.stopServer()
	if s.drop != nil {
		s.drop()
		s.drop = nil
	}
}

// storage measures what finished builds of real build output take on
// disk once compacted, against the message text they hold, and that a
// build writing ten times its cap keeps no more than the cap and a batch,
// at the ingest rate of one under it.
func (r *runner) storage(ctx context.Context) error {
	if r.cfg.URL != "" || r.cfg.PGReuse {
		// validate refuses them when storage was asked for by name.
		r.figs = append(r.figs, figure{scenario: "storage", name: "not measured",
			text: "it measures stores' files on servers of its own: not with --url or --pg-reuse"})
		return nil
	}
	lines, err := corpus()
	if err != nil {
		return err
	}
	bodies, msgBytes := corpusBatches(lines, r.cfg.StorageBatch, time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC))
	r.progress("storage: corpus of %s lines, %s bytes of message text, in batches of %d",
		thousands(int64(len(lines))), thousands(msgBytes), r.cfg.StorageBatch)

	st, err := r.storageStore(ctx, "storage-data", nil)
	if err != nil {
		return err
	}
	defer st.close()
	c := newClient(st.srv.URL, st.srv.Key, 2)
	defer c.close()
	// What the store takes before any build: every table's and index's
	// first page (8 KiB in a store created now), a cost per database, not per log.
	empty, err := st.db.inUse(ctx)
	if err != nil {
		return err
	}
	var ids []string
	start := time.Now()
	for range r.cfg.StorageBuilds {
		id, err := c.createBuild(ctx)
		if err != nil {
			return err
		}
		for _, b := range bodies {
			if _, err := c.append(ctx, id, b); err != nil {
				return err
			}
		}
		if err := c.finish(ctx, id); err != nil {
			return err
		}
		ids = append(ids, id)
	}
	uncapped := float64(len(lines)*len(ids)) / time.Since(start).Seconds()
	totalMsg := msgBytes * int64(len(ids))
	// The compactor runs at once after each finish; wait for it.
	for deadline := time.Now().Add(10 * time.Minute); ; {
		n, err := st.db.compacted(ctx, ids)
		if err != nil {
			return err
		}
		if n == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("storage: %d of %d builds compacted after 10 minutes", n, len(ids))
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.progress("storage: %d builds appended at %.0f entries/s, finished and compacted in %.1fs", len(ids), uncapped, time.Since(start).Seconds())
	st.db.close()
	st.db = nil
	st.stopServer()
	what := fmt.Sprintf("%d finished builds", len(ids))
	if len(ids) == 1 {
		what = "1 finished build"
	}
	// Every figure is bytes on disk for the same corpus, against its
	// message text, with the same target.
	onDisk := func(name string, bytes int64) figure {
		return figure{scenario: "storage", name: name, unit: bytesPer, vals: []float64{float64(bytes)},
			base: []float64{float64(totalMsg)}, baseName: "(message text)", target: "≤ 0.25× baseline", check: atMostBase(0.25)}
	}
	if st.dsn != "" {
		total, full, err := pgLogBytes(ctx, st.dsn)
		if err != nil {
			return err
		}
		r.figs = append(r.figs,
			onDisk("bytes on disk, "+what+" (log tables, pg_total_relation_size)", total),
			onDisk("the same after VACUUM FULL", full),
			onDisk(fmt.Sprintf("the same after VACUUM FULL, above the empty tables' %s", humanBytes(empty)), full-empty))
	} else {
		file, inUse, vacuumed, err := sqliteBytes(ctx, st.dir)
		if err != nil {
			return err
		}
		r.figs = append(r.figs,
			onDisk("bytes on disk, "+what+" (database + WAL after a checkpoint)", file),
			onDisk("the same, pages in use (free pages go to later appends)", inUse),
			onDisk(fmt.Sprintf("the same, pages in use above an empty store's %s", humanBytes(empty)), inUse-empty),
			onDisk("the same after VACUUM", vacuumed))
	}
	st.close()
	return r.storageCapped(ctx, bodies, uncapped)
}

// storageCapped writes ten times the cap to one build of a server with a
// small cap, and measures what the store keeps of it.
func (r *runner) storageCapped(ctx context.Context, bodies [][]byte, uncapped float64) error {
	logCap := buildlog.LogCap{MaxBytes: r.cfg.StorageCap, HeadBytes: r.cfg.StorageCap / 4}
	st, err := r.storageStore(ctx, "storage-capped", &logCap)
	if err != nil {
		return err
	}
	defer st.close()
	c := newClient(st.srv.URL, st.srv.Key, 2)
	defer c.close()
	id, err := c.createBuild(ctx)
	if err != nil {
		return err
	}
	var b struct {
		KeptBytes int64             `json:"kept_bytes"`
		Omitted   *buildlog.Omitted `json:"omitted"`
	}
	var written, maxBatch, entries int64
	var elapsed time.Duration // in appends only, not the GETs between them
	for i := 0; written < 10*logCap.MaxBytes; i++ {
		before := b.KeptBytes
		if b.Omitted != nil {
			before += int64(b.Omitted.Bytes)
		}
		body := bodies[i%len(bodies)]
		start := time.Now()
		res, err := c.append(ctx, id, body)
		elapsed += time.Since(start)
		if err != nil {
			return err
		}
		entries += int64(res.NextOffset - res.FirstOffset)
		if err := c.do(ctx, "GET", "/v1/templates/builds/"+id, nil, &b); err != nil {
			return err
		}
		written = b.KeptBytes
		if b.Omitted != nil {
			written += int64(b.Omitted.Bytes)
		}
		maxBatch = max(maxBatch, written-before)
	}
	stored, err := st.db.buildBytes(ctx, id)
	if err != nil {
		return err
	}
	r.progress("storage: capped build: %s bytes written, %s kept, %s stored", thousands(written), thousands(b.KeptBytes), thousands(stored))
	r.figs = append(r.figs,
		figure{scenario: "storage", name: fmt.Sprintf("a build writing %s (10× its cap): stored bytes", humanBytes(written)), unit: bytesPer,
			vals: []float64{float64(stored)}, base: []float64{float64(logCap.MaxBytes + maxBatch)}, baseName: "(cap + one batch)",
			target: "≤ 1× baseline", check: atMostBase(1)},
		figure{scenario: "storage", name: "its kept_bytes", unit: bytesPer,
			vals: []float64{float64(b.KeptBytes)}, base: []float64{float64(logCap.MaxBytes + maxBatch)}, baseName: "(cap + one batch)",
			target: "≤ 1× baseline", check: atMostBase(1)},
		// The time of the appends alone: the GET after each, to see what
		// was written, is left out.
		figure{scenario: "storage", name: "ingest entries/s past the cap, one producer", unit: perSecond,
			vals: []float64{float64(entries) / elapsed.Seconds()}, base: []float64{uncapped}, baseName: "(the same appends, no cap)"},
	)
	return nil
}

func humanBytes(n int64) string { return buildlog.HumanBytes(uint64(max(n, 0))) }

func atMostBase(x float64) func(v, b float64) bool {
	return func(v, b float64) bool { return b > 0 && v <= x*b }
}

// sqliteBytes checkpoints the stopped store's WAL into its file and
// returns the database and WAL files' size, the bytes of its pages in use,
// and the size of a VACUUMed copy.
func sqliteBytes(ctx context.Context, dir string) (file, inUse, vacuumed int64, err error) {
	path := filepath.Join(dir, sqlite.FileName)
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return 0, 0, 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return 0, 0, 0, err
	}
	for _, f := range []string{path, path + "-wal"} {
		if fi, err := os.Stat(f); err == nil {
			file += fi.Size()
		}
	}
	var pages, free, size int64
	for q, v := range map[string]*int64{`PRAGMA page_count`: &pages, `PRAGMA freelist_count`: &free, `PRAGMA page_size`: &size} {
		if err := db.QueryRowContext(ctx, q).Scan(v); err != nil {
			return 0, 0, 0, err
		}
	}
	inUse = (pages - free) * size
	copyPath := filepath.Join(dir, "vacuumed.db")
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, copyPath); err != nil {
		return 0, 0, 0, err
	}
	defer os.Remove(copyPath)
	fi, err := os.Stat(copyPath)
	if err != nil {
		return 0, 0, 0, err
	}
	return file, inUse, fi.Size(), nil
}

// pgLogBytes returns the log tables' total size (heap, TOAST, indexes) as
// the compactor left them, once autovacuum could have run (a plain VACUUM
// now, which frees dead rows for reuse but gives no space back), and
// after VACUUM FULL.
func pgLogBytes(ctx context.Context, dsn string) (total, full int64, err error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(ctx)
	size := func() (int64, error) {
		var n int64
		err := conn.QueryRow(ctx, `SELECT pg_total_relation_size('chunks') + pg_total_relation_size('batch_hashes')`).Scan(&n)
		return n, err
	}
	if _, err := conn.Exec(ctx, `VACUUM chunks, batch_hashes`); err != nil {
		return 0, 0, err
	}
	if total, err = size(); err != nil {
		return 0, 0, err
	}
	if _, err := conn.Exec(ctx, `VACUUM FULL chunks, batch_hashes`); err != nil {
		return 0, 0, err
	}
	full, err = size()
	return total, full, err
}
