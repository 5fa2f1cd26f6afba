// Package sqlite is the embedded default buildlog.Store: one SQLite
// database file in a data directory, written durably (WAL with
// synchronous=FULL, so an acknowledged append survives kill -9 and power
// loss) through a single writer connection, read through a separate pool.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"buildlog"
	"buildlog/internal/logwrite"
	"buildlog/internal/segment"
)

// FileName is the database file Open keeps in its directory.
const FileName = "buildlog.db"

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a buildlog.Store on SQLite. It is safe for concurrent use.
type Store struct {
	// w has exactly one connection, so writers queue for it in Go rather
	// than spin on SQLITE_BUSY, and offsets are assigned one batch at a time.
	w *sql.DB
	// r is a pool of read-only connections; WAL lets them read the last
	// commit while the writer is mid-transaction.
	r *sql.DB

	// ck checkpoints the WAL into the database file in the background, on
	// a connection of its own, so that appends do not: measured, the
	// writer spent half its time in SQLite's automatic checkpoint (copying
	// ~4 MiB and two fsyncs every ~25 large commits), during which every
	// other append waited. The writer's own autocheckpoint stays, at a
	// higher mark, as the backstop that lets the WAL restart from its
	// beginning under a writer that never pauses.
	ck     *sql.DB
	ckKick chan struct{}
	ckStop context.CancelFunc
	ckDone chan struct{}

	closeOnce sync.Once // Close stops the writer and the checkpointer once, however often it is called

	// Statements prepared once, so a write does not parse SQL while it
	// holds the only writer connection.
	appendBuild, chunkAt, keyExists, buildW *sql.Stmt // on w
	readLog, build                          *sql.Stmt // on r
	// many holds the writer's multi-row statements by text (see
	// rowCounts); only the writer goroutine uses them.
	many map[string]*sql.Stmt
	// states is the writer's memory of build rows (see groupTx.state);
	// only the writer goroutine touches it.
	states map[string]*buildState

	secretMu sync.Mutex
	secret   []byte // cached: it never changes once created

	// Writer is the group-commit writer (see commit), started by Open
	// and stopped by Close; compactor is the background compaction
	// (StartCompactor), stopped by Close before the writer.
	logwrite.Writer[*sql.Tx, opX]
	compactor segment.Background
}

var _ buildlog.Store = (*Store)(nil)

// readDriver is the read pool's driver; a test swaps in one that reuses
// its buffers, as the database/sql driver contract allows.
var readDriver = "sqlite"

// Open opens (creating if needed) the store in dir, applying any schema
// migrations the database has not had yet.
func Open(ctx context.Context, dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("sqlite: create data directory: %w", err)
	}
	path := filepath.Join(dir, FileName)

	w, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	// Opening the writer first switches the file to WAL before any reader
	// connects.
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := migrate(ctx, w, migrations); err != nil {
		w.Close()
		return nil, err
	}

	r, err := sql.Open(readDriver, dsn(path, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	if err := r.PingContext(ctx); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	ck, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	ck.SetMaxOpenConns(1)
	ck.SetMaxIdleConns(1)
	ck.SetConnMaxLifetime(0)
	ck.SetConnMaxIdleTime(0)
	bg, stop := context.WithCancel(context.Background())
	s := &Store{w: w, r: r, ck: ck, ckKick: make(chan struct{}, 1), ckStop: stop, ckDone: make(chan struct{})}
	go s.checkpointer(bg)
	s.many, s.states = map[string]*sql.Stmt{}, map[string]*buildState{}
	s.StartWriter(s.commit)
	if err := s.prepare(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return s, nil
}

// checkpointEvery gathers the commits of this long into one background
// checkpoint: sooner copies the same pages in more, smaller steps.
const checkpointEvery = 100 * time.Millisecond

// writerCheckpointPages is the WAL size, in pages, at which the writer
// checkpoints by itself (SQLite's default is 1000): reached only when the
// background checkpoints have not caught up. 2,000 pages of 8 KiB is
// 16 MiB of WAL.
const writerCheckpointPages = 2000

// writerCacheKiB is the writer connection's page cache: room for every
// page a bounded group (group.DefaultLimits) dirties.
const writerCacheKiB = 64 << 10

// checkpointer runs a PASSIVE checkpoint (which never blocks the writer or
// readers) after commits, at most every checkpointEvery. Failures are left
// to the next round and to the writer's own autocheckpoint.
func (s *Store) checkpointer(ctx context.Context) {
	defer close(s.ckDone)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.ckKick:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(checkpointEvery):
		}
		var busy, frames, done int64
		s.ck.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &done)
	}
}

// kick asks for a background checkpoint after a commit; it never blocks.
func (s *Store) kick() {
	select {
	case s.ckKick <- struct{}{}:
	default:
	}
}

// rowCounts are the sizes of multi-row statements prepared: a group writes
// n rows as the binary digits of n, so seven statements of each kind
// serve every n (the writer cannot prepare one while its transaction
// holds the only connection).
var rowCounts = []int{64, 32, 16, 8, 4, 2, 1}

// insertChunks is the INSERT of n chunks.
func insertChunks(n int) string {
	return `INSERT INTO chunks (build_id, first_offset, count, terminal, hash, data) VALUES ` +
		strings.Repeat("(?, ?, ?, ?, ?, ?), ", n-1) + `(?, ?, ?, ?, ?, ?)`
}

// insertHashes is the INSERT of n batch hashes of one build (?1) that a
// compaction swap keeps: a segment of a fleet build replaces a few hundred
// chunks, and a statement each was most of the swap's time.
func insertHashes(n int) string {
	return `INSERT OR IGNORE INTO batch_hashes (build_id, first_offset, count, hash) VALUES ` +
		strings.Repeat("(?1, ?, ?, ?), ", n-1) + `(?1, ?, ?, ?)`
}

// updateBuilds is the UPDATE a group makes to n builds' rows. There is one
// per case, so that an append rewrites only what changes: assigning an
// indexed column rewrites its index entry even to the same value (start:
// queued builds start, assigning status and started_at; activity: the
// recorded activity is older than buildlog.ActivityGranularity, assigning
// last_activity; neither: only the row itself). Each row of values is: id,
// now, next offset, entries added, last phase or "", start time, kept bytes.
func updateBuilds(start, activity bool, n int) string {
	var set []string
	if start {
		set = append(set, `status = CASE status WHEN 'queued' THEN 'building' ELSE status END`,
			`started_at = coalesce(started_at, u.column6)`)
	}
	set = append(set, `next_offset = u.column3`, `entry_count = entry_count + u.column4`,
		`last_phase = coalesce(nullif(u.column5, ''), last_phase)`)
	if activity {
		set = append(set, `last_activity = u.column2`)
	}
	set = append(set, `updated_at = u.column2`, `kept_bytes = u.column7`)
	return `UPDATE builds SET ` + strings.Join(set, ", ") + ` FROM (VALUES ` +
		strings.Repeat("(?, ?, ?, ?, ?, ?, ?), ", n-1) + `(?, ?, ?, ?, ?, ?, ?)) AS u WHERE builds.id = u.column1`
}

// stmt returns the writer's prepared statement for text, one of those
// prepare made.
func (s *Store) stmt(text string) *sql.Stmt { return s.many[text] }

func (s *Store) prepare(ctx context.Context) error {
	for _, p := range []struct {
		db   *sql.DB
		stmt **sql.Stmt
		sql  string
	}{
		{s.w, &s.appendBuild, `SELECT template_id, status, next_offset, last_activity, created_at,
			kept_bytes, omitted_from, omitted_to FROM builds WHERE id = ?`},
		{s.w, &s.keyExists, `SELECT 1 FROM keys WHERE id = ?`},
		{s.w, &s.buildW, `SELECT ` + buildCols + ` FROM builds WHERE id = ?`},
		// A batch's hash is on its chunk until compaction merges the
		// chunk into a segment (whose hash is NULL), then in batch_hashes.
		{s.w, &s.chunkAt, `SELECT count, hash FROM chunks WHERE build_id = ?1 AND first_offset = ?2 AND hash IS NOT NULL
			UNION ALL SELECT count, hash FROM batch_hashes WHERE build_id = ?1 AND first_offset = ?2`},
		// The subquery seeks, on (build_id, first_offset), the last chunk
		// starting at or before the offset; chunks are dense, so it holds
		// the offset unless that is at or past the end. data is read as
		// TEXT, which arrives as a string ReadLog may keep (see there).
		// The build's row comes with every chunk, read in the same
		// statement and so the same snapshot: a read never sees a gap the
		// size cap made without the range that explains it.
		{s.r, &s.readLog, `SELECT c.first_offset, c.count, c.terminal, c.codec, coalesce(c.size, 0), CAST(c.data AS TEXT),
				b.template_id, b.omitted_from, b.omitted_to, b.omitted_entries, b.omitted_bytes, b.omitted_ts
			FROM builds b, chunks c
			WHERE b.id = ?1 AND c.build_id = ?1 AND c.first_offset >= coalesce(
				(SELECT first_offset FROM leftovers WHERE build_id = ?1 AND first_offset <= ?2 AND end_offset > ?2
					ORDER BY first_offset DESC LIMIT 1),
				(SELECT max(first_offset) FROM chunks WHERE build_id = ?1 AND first_offset <= ?2), 0)
			ORDER BY c.first_offset`},
		{s.r, &s.build, `SELECT ` + buildCols + ` FROM builds WHERE id = ?`},
	} {
		stmt, err := p.db.PrepareContext(ctx, p.sql)
		if err != nil {
			return err
		}
		*p.stmt = stmt
	}
	for _, n := range rowCounts {
		texts := []string{insertChunks(n), insertHashes(n)}
		for _, start := range []bool{false, true} {
			for _, activity := range []bool{false, true} {
				texts = append(texts, updateBuilds(start, activity, n))
			}
		}
		for _, text := range texts {
			stmt, err := s.w.PrepareContext(ctx, text)
			if err != nil {
				return err
			}
			s.many[text] = stmt
		}
	}
	return nil
}

// dsn is the modernc.org/sqlite connection string for path. Every pragma is
// per connection except journal_mode, which the file keeps.
func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Set("_busy_timeout", "10000") // other processes (the CLI on --data) may hold the lock briefly
	q.Set("_foreign_keys", "1")
	if readOnly {
		q.Set("_query_only", "1")
	} else {
		// 8 KiB pages. A group commit rewrites a page of the chunks index
		// per build in it and a WAL frame is a whole page, so smaller pages
		// write less per append; larger ones make fewer overflow pages of a
		// big chunk. Measured against 16 KiB (docs/PERFORMANCE.md): a
		// compacted log's pages 15% fewer, single appends a little faster,
		// big-batch ingest 3–4% slower, fleets the same within the noise;
		// 4 KiB slowed the fleet. It
		// takes effect only when the file is created: an existing store
		// keeps its page size.
		q.Add("_pragma", "page_size(8192)")
		q.Add("_pragma", "wal_autocheckpoint("+strconv.Itoa(writerCheckpointPages)+")")
		// A group commit of many builds' appends dirties a page of the
		// chunks index per build, more than the default 2 MiB cache holds:
		// SQLite then spilled pages to the WAL mid-transaction, and wrote
		// them again at commit.
		q.Add("_pragma", "cache_size(-"+strconv.Itoa(writerCacheKiB)+")")
		q.Set("_journal_mode", "WAL")
		// A multi-row statement inside a transaction keeps a statement
		// journal (the pages it changes, as they were, should it abort
		// halfway), and past 64 KiB SQLite spills that to a temporary
		// file: a group's chunk insert, which touches a chunks-index page
		// per build, wrote about as many bytes there as to the WAL, one
		// pwrite a page. In memory it is a copy and no system call (the
		// fleet's gain from it is within the noise, docs/PERFORMANCE.md;
		// the system calls are gone from its profile). It holds
		// the B-tree pages one statement changes (freed overflow pages
		// are not kept), and every statement of the writer is bounded:
		// a group's by group.DefaultLimits, a compaction turn's by its
		// rows, retention's by one build's log (DeleteFinished).
		q.Add("_pragma", "temp_store(MEMORY)")
		// FULL syncs the WAL on every commit: NORMAL would survive a
		// process crash but could lose acknowledged commits on power loss.
		q.Set("_synchronous", "FULL")
		// Take the write lock at BEGIN, so a transaction never fails to
		// upgrade from read to write halfway through.
		q.Set("_txlock", "immediate")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// Close closes both pools; the last close checkpoints the WAL.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.compactor.Stop()
		s.StopWriter()
		s.ckStop()
		<-s.ckDone
	})
	var errs []error
	for _, stmt := range s.many {
		errs = append(errs, stmt.Close())
	}
	for _, stmt := range []*sql.Stmt{s.appendBuild, s.keyExists, s.buildW, s.chunkAt, s.readLog, s.build} {
		if stmt != nil {
			errs = append(errs, stmt.Close())
		}
	}
	return errors.Join(append(errs, s.ck.Close(), s.r.Close(), s.w.Close())...)
}

// Ping reports whether the database answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// migration is one numbered schema change.
type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads NNNN_name.sql files from fsys's migrations directory,
// in version order.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	paths, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	seen := map[int]string{}
	for _, p := range paths {
		base := strings.TrimSuffix(filepath.Base(p), ".sql")
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("sqlite: migration %s: want a name like 0001_name.sql", p)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("sqlite: migrations %s and %s share version %d", other, p, v)
		}
		seen[v] = p
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: base, sql: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// migrate applies, in order, each migration not yet recorded in
// schema_migrations, each in its own transaction with its record, so a
// failed migration leaves the database as the previous one left it.
func migrate(ctx context.Context, db *sql.DB, fsys fs.FS) error {
	ms, err := loadMigrations(fsys)
	if err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at INTEGER NOT NULL
	) STRICT`); err != nil {
		return fmt.Errorf("sqlite: create schema_migrations: %w", err)
	}
	for _, m := range ms {
		if err := applyMigration(ctx, db, m); err != nil {
			return fmt.Errorf("sqlite: migration %s: %w", m.name, err)
		}
	}
	return nil
}

func applyMigration(ctx context.Context, db *sql.DB, m migration) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// Checked inside the (immediate) transaction, so two processes opening
	// one database at once do not both apply it.
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, m.version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		m.version, m.name, time.Now().UnixNano()); err != nil {
		return err
	}
	return tx.Commit()
}

// zeroTime stands for the zero time.Time, which has no unix nanoseconds.
const zeroTime = math.MinInt64

// nanos is how times are stored: unix nanoseconds, lossless for the
// years 1678–2262.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return zeroTime
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == zeroTime {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// nullNanos stores an optional time; nil is NULL.
func nullNanos(t *time.Time) any {
	if t == nil {
		return nil
	}
	return nanos(*t)
}

func fromNullNanos(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

// nullBytes stores empty as NULL, so an absent JSON value stays absent.
func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// wrap marks err as the store's own failure, which callers report as
// unavailable; *buildlog.Error values pass through unchanged.
func wrap(op string, err error) error {
	var e *buildlog.Error
	if err == nil || errors.As(err, &e) {
		return err
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

// queryAll runs q on db and scans every row it returns; op names the
// operation in the errors. No rows is a nil slice.
func queryAll[T any](ctx context.Context, db *sql.DB, op string, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, v)
	}
	return out, wrap(op, rows.Err())
}

// execOne runs q, which is meant to touch exactly one row, on ex (the
// writer or one of its transactions); op names the operation in the
// errors. When q touches no row it returns none, unwrapped: the caller's
// conflict or not_found.
func execOne(ctx context.Context, ex interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, op string, none error, q string, args ...any) error {
	res, err := ex.ExecContext(ctx, q, args...)
	if err != nil {
		return wrap(op, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return wrap(op, err)
	} else if n == 0 {
		return none
	}
	return nil
}
