package sqlite

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"buildlog"
	"buildlog/internal/storetest"
	"buildlog/internal/wire"
)

// openTest opens a store in dir, closed when t ends.
func openTest(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) buildlog.Store { return openTest(t, t.TempDir()) })
}

func TestOpenCreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	openTest(t, dir)
	if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
		t.Fatalf("database file: %v", err)
	}
}

func TestReopenKeepsData(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	b := storetest.NewBuild("kept", storetest.At(0))
	if err := s.CreateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, b.ID, storetest.BatchOf("one", "two"), storetest.At(1)); err != nil {
		t.Fatal(err)
	}
	wantBuild, _, err := s.Finish(ctx, b.ID, &buildlog.Finish{Status: buildlog.StatusReady, Timestamp: storetest.Timestamp}, storetest.At(2))
	if err != nil {
		t.Fatal(err)
	}
	wantLog := storetest.ReadAll(t, s, b.ID)
	key := &buildlog.Key{ID: "key_1", Team: "acme", Scopes: []buildlog.Scope{buildlog.ScopeRead}, CreatedAt: storetest.At(3), Hash: buildlog.HashKey("k")}
	if err := s.CreateKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	wantSecret, err := s.Secret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, dir)
	got, err := s.Build(ctx, b.ID)
	if err != nil {
		t.Fatalf("Build after reopen: %v", err)
	}
	if got.Status != wantBuild.Status || got.NextOffset != wantBuild.NextOffset || !got.FinishedAt.Equal(*wantBuild.FinishedAt) {
		t.Errorf("Build after reopen = %+v, want %+v", got, wantBuild)
	}
	gotLog := storetest.ReadAll(t, s, b.ID)
	if len(gotLog) != len(wantLog) {
		t.Fatalf("log after reopen: %d chunks, want %d", len(gotLog), len(wantLog))
	}
	for i := range gotLog {
		if !bytes.Equal(gotLog[i].Data, wantLog[i].Data) || gotLog[i].Terminal != wantLog[i].Terminal {
			t.Errorf("chunk %d after reopen differs", i)
		}
	}
	if _, err := s.KeyByHash(ctx, key.Hash); err != nil {
		t.Errorf("KeyByHash after reopen: %v", err)
	}
	gotSecret, err := s.Secret(ctx)
	if err != nil || !bytes.Equal(gotSecret, wantSecret) {
		t.Errorf("Secret after reopen = %x, %v; want %x", gotSecret, err, wantSecret)
	}
}

type appliedMigration struct {
	version   int
	name      string
	appliedAt int64
}

func applied(t *testing.T, db *sql.DB) []appliedMigration {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT version, name, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []appliedMigration
	for rows.Next() {
		var m appliedMigration
		if err := rows.Scan(&m.version, &m.name, &m.appliedAt); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMigrations(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	embedded, err := loadMigrations(migrations)
	if err != nil {
		t.Fatal(err)
	}
	first := applied(t, s.w)
	var gotNames, wantNames []string
	for _, m := range first {
		gotNames = append(gotNames, m.name)
	}
	for _, m := range embedded {
		wantNames = append(wantNames, m.name)
	}
	if !slices.Equal(gotNames, wantNames) || gotNames[0] != "0001_init" {
		t.Fatalf("schema_migrations = %q, want %q", gotNames, wantNames)
	}
	s.Close()

	t.Run("reopen applies nothing", func(t *testing.T) {
		s := openTest(t, dir)
		if got := applied(t, s.w); !slices.Equal(got, first) {
			t.Errorf("after reopen: %v, want unchanged %v", got, first)
		}
	})

	t.Run("new migration applied once", func(t *testing.T) {
		s := openTest(t, dir)
		fsys := withMigrations(t, map[string]string{
			"migrations/0090_extra.sql": "CREATE TABLE extra (a INTEGER); INSERT INTO extra VALUES (1);",
		})
		for range 2 {
			if err := migrate(t.Context(), s.w, fsys); err != nil {
				t.Fatalf("migrate: %v", err)
			}
		}
		got := applied(t, s.w)
		if len(got) != len(first)+1 || !slices.Equal(got[:len(first)], first) || got[len(first)].name != "0090_extra" {
			t.Errorf("after a new migration: %v, want %v then 0090_extra", got, first)
		}
		var n int
		if err := s.w.QueryRowContext(t.Context(), `SELECT count(*) FROM extra`).Scan(&n); err != nil || n != 1 {
			t.Errorf("extra has %d rows (%v), want 1: the migration ran more than once or not at all", n, err)
		}
	})

	t.Run("failed migration leaves no trace", func(t *testing.T) {
		s := openTest(t, dir)
		before := applied(t, s.w)
		fsys := withMigrations(t, map[string]string{
			"migrations/0090_extra.sql":  "CREATE TABLE extra (a INTEGER);",
			"migrations/0091_broken.sql": "CREATE TABLE half (a INTEGER); SELECT no_such_function();",
		})
		if err := migrate(t.Context(), s.w, fsys); err == nil {
			t.Fatal("migrate with a broken migration: no error")
		}
		if got := applied(t, s.w); !slices.Equal(got, before) {
			t.Errorf("after a failed migration: %v, want %v", got, before)
		}
		var n int
		if err := s.w.QueryRowContext(t.Context(), `SELECT count(*) FROM sqlite_schema WHERE name = 'half'`).Scan(&n); err != nil || n != 0 {
			t.Errorf("table of the failed migration exists (%d, %v)", n, err)
		}
	})

	t.Run("bad file names", func(t *testing.T) {
		for _, name := range []string{"migrations/init.sql", "migrations/0001_dup.sql"} {
			if _, err := loadMigrations(withMigrations(t, map[string]string{name: "SELECT 1;"})); err == nil {
				t.Errorf("loadMigrations with %s: no error", name)
			}
		}
	})
}

// withMigrations is the embedded migrations plus extra files.
func withMigrations(t *testing.T, extra map[string]string) fs.FS {
	t.Helper()
	fsys := fstest.MapFS{}
	paths, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		data, err := fs.ReadFile(migrations, p)
		if err != nil {
			t.Fatal(err)
		}
		fsys[p] = &fstest.MapFile{Data: data}
	}
	for p, body := range extra {
		fsys[p] = &fstest.MapFile{Data: []byte(body)}
	}
	return fsys
}

func pragma(t *testing.T, db *sql.DB, name string) string {
	t.Helper()
	var v string
	if err := db.QueryRowContext(t.Context(), "PRAGMA "+name).Scan(&v); err != nil {
		t.Fatalf("PRAGMA %s: %v", name, err)
	}
	return v
}

func TestPragmas(t *testing.T) {
	s := openTest(t, t.TempDir())
	tests := []struct {
		db   *sql.DB
		conn string
		name string
		want string
	}{
		{s.w, "writer", "journal_mode", "wal"},
		{s.w, "writer", "synchronous", "2"}, // FULL
		{s.w, "writer", "foreign_keys", "1"},
		{s.w, "writer", "busy_timeout", "10000"},
		{s.w, "writer", "page_size", "8192"},
		{s.w, "writer", "temp_store", "2"}, // MEMORY: statement journals never reach a file
		{s.w, "writer", "cache_size", "-65536"},
		{s.r, "reader", "journal_mode", "wal"},
		{s.r, "reader", "query_only", "1"},
		{s.r, "reader", "busy_timeout", "10000"},
	}
	for _, tt := range tests {
		t.Run(tt.conn+" "+tt.name, func(t *testing.T) {
			if got := pragma(t, tt.db, tt.name); got != tt.want {
				t.Errorf("PRAGMA %s = %s, want %s", tt.name, got, tt.want)
			}
		})
	}
}

// TestReadsDoNotWaitForWriter holds the write lock in an open transaction
// and reads: reads go through their own connections, and WAL serves them the
// last commit. A read that waited would hang until the test's deadline.
func TestReadsDoNotWaitForWriter(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := t.Context()
	b := storetest.NewBuild("r", storetest.At(0))
	if err := s.CreateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, b.ID, storetest.BatchOf("committed"), storetest.At(1)); err != nil {
		t.Fatal(err)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `UPDATE builds SET next_offset = 99 WHERE id = ?`, b.ID); err != nil {
		t.Fatal(err)
	}
	got, err := s.Build(ctx, b.ID)
	if err != nil {
		t.Fatalf("Build during a write: %v", err)
	}
	if got.NextOffset != 1 {
		t.Errorf("Build during a write: NextOffset %d, want the committed 1", got.NextOffset)
	}
	if chunks, err := s.ReadLog(ctx, b.ID, 0, 1<<20); err != nil || len(chunks) != 1 {
		t.Errorf("ReadLog during a write = %d chunks, %v; want 1", len(chunks), err)
	}
}

// crashEnv names the directory a TestCrashChild process appends in.
const crashEnv = "BUILDLOG_SQLITE_CRASH_DIR"

// TestCrashChild is the process TestKillKeepsAcknowledged kills: it appends
// until killed, printing each acknowledged next offset.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("run by TestKillKeepsAcknowledged")
	}
	ctx := context.Background()
	s, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBuild(ctx, storetest.NewBuild("crash", storetest.At(0))); err != nil {
		t.Fatal(err)
	}
	for i := range 100000 {
		first := uint64(i * 10)
		res, err := s.Append(ctx, "crash", storetest.RetryBatchOf(first, storetest.Messages(strconv.Itoa(i), 10)...), storetest.At(1))
		if err != nil {
			t.Fatal(err)
		}
		// A parent gone before killing us closes the pipe: stop then.
		if _, err := fmt.Fprintf(os.Stdout, "ack %d\n", res.NextOffset); err != nil {
			return
		}
	}
}

// TestKillKeepsAcknowledged kills a process mid-append with SIGKILL and
// checks that every append it acknowledged is in the reopened store, intact.
func TestKillKeepsAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked uint64
	lines := bufio.NewScanner(out)
	for n := 0; n < 30 && lines.Scan(); {
		if v, ok := strings.CutPrefix(lines.Text(), "ack "); ok {
			if acked, err = strconv.ParseUint(v, 10, 64); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if acked == 0 {
		t.Fatal("the child acknowledged nothing")
	}

	s := openTest(t, dir)
	chunks := storetest.ReadAll(t, s, "crash")
	stored := storetest.Lines(t, chunks)
	if uint64(len(stored)) < acked {
		t.Fatalf("after kill -9: %d entries stored, but %d were acknowledged", len(stored), acked)
	}
	for i, c := range chunks {
		want := wire.EncodeBatch(storetest.RetryBatchOf(c.First, storetest.Messages(strconv.Itoa(i), 10)...), "crash", "tmpl_1", c.First)
		if !bytes.Equal(c.Data, want) {
			t.Errorf("chunk %d at %d differs after kill -9", i, c.First)
		}
	}
}

// benchBatch is a batch of n entries of about 150 bytes each as stored
// (the size MEASUREMENTS.md used), like a package manager's output.
func benchBatch(n int) *buildlog.Batch { return wire.NewBatch(benchEntries(n), nil, nil) }

func benchEntries(n int) []buildlog.Entry {
	es := make([]buildlog.Entry, n)
	for i := range es {
		es[i] = buildlog.Entry{Timestamp: "2026-03-17T00:00:12Z", Kind: buildlog.KindMessage, Level: buildlog.LevelInfo,
			Message: fmt.Sprintf("npm: added %d packages", 100+i%900)}
	}
	return es
}

// BenchmarkAppend appends 1000-entry batches, each durably committed,
// spread over 100 builds.
func BenchmarkAppend(b *testing.B) {
	storetest.BenchAppend(b, openTest(b, b.TempDir()), benchBatch(1000))
}

// benchLog opens a store holding one build, id, of batches appends of
// perBatch entries each.
func benchLog(b *testing.B, id string, batches, perBatch int) *Store {
	s := openTest(b, b.TempDir())
	ctx := context.Background()
	if err := s.CreateBuild(ctx, storetest.NewBuild(id, storetest.At(0))); err != nil {
		b.Fatal(err)
	}
	batch := benchBatch(perBatch)
	for range batches {
		if _, err := s.Append(ctx, id, batch, storetest.At(1)); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// BenchmarkReadLog replays a 100,000-entry log from offset 0 in pages of
// about 256 KiB, as a reader catching up does.
func BenchmarkReadLog(b *testing.B) {
	const id, batches, perBatch = "replay", 100, 1000
	s := benchLog(b, id, batches, perBatch)
	ctx := context.Background()
	entries := 0
	for b.Loop() {
		for from := uint64(0); ; {
			chunks, err := s.ReadLog(ctx, id, from, 256<<10)
			if err != nil {
				b.Fatal(err)
			}
			if len(chunks) == 0 {
				break
			}
			for _, c := range chunks {
				entries += c.From(from).Count
				from = c.End()
			}
		}
	}
	if entries%(batches*perBatch) != 0 {
		b.Fatalf("replayed %d entries, not a multiple of %d", entries, batches*perBatch)
	}
	b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkReadLogRandom reads one page at a random offset, as a reconnecting
// reader does.
func BenchmarkReadLogRandom(b *testing.B) {
	const id, batches, perBatch = "random", 100, 1000
	s := benchLog(b, id, batches, perBatch)
	ctx := context.Background()
	i := uint64(0)
	for b.Loop() {
		from := (i * 7919) % (batches * perBatch)
		chunks, err := s.ReadLog(ctx, id, from, 1)
		if err != nil || len(chunks) != 1 || chunks[0].First > from || chunks[0].End() <= from {
			b.Fatalf("ReadLog(%d) = %d chunks, %v", from, len(chunks), err)
		}
		i++
	}
}

// BenchmarkFleetAppend is 256 producers appending 10-entry batches to
// their own builds at once, straight to the store: what group commit is
// for. It reports appends/s and the writer's groups.
func BenchmarkFleetAppend(b *testing.B) {
	s := openTest(b, b.TempDir())
	ctx := context.Background()
	const builds = 256
	for i := range builds {
		if err := s.CreateBuild(ctx, storetest.NewBuild(fmt.Sprintf("fleet-%d", i), storetest.At(0))); err != nil {
			b.Fatal(err)
		}
	}
	batch := benchBatch(10)
	g0, r0 := s.GroupStats()
	var next atomic.Int64
	b.SetParallelism((builds + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := fmt.Sprintf("fleet-%d", next.Add(1)%builds)
		for pb.Next() {
			if _, err := s.Append(ctx, id, batch, storetest.At(1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	g1, r1 := s.GroupStats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
	b.ReportMetric(float64(r1-r0)/float64(max(g1-g0, 1)), "appends/group")
}

// BenchmarkCompactFleet compacts 256 finished builds whose 10-entry
// appends were interleaved the way a fleet writes them, so that each
// build's chunks are spread over pages it shares with the others. Each
// append names its first_offset, as the fleet's producers do, so each
// carries a batch hash that compaction keeps for retries.
func BenchmarkCompactFleet(b *testing.B) {
	s := openTest(b, b.TempDir())
	ctx := context.Background()
	const builds, appends = 256, 200
	entries := benchEntries(10)
	batches := make([]*buildlog.Batch, appends)
	for k := range batches {
		first := uint64(k * len(entries))
		batches[k] = wire.NewBatch(entries, &first, wire.HashEntries(entries))
	}
	round := 0
	var appending time.Duration
	for b.Loop() {
		b.StopTimer()
		round++
		start := time.Now()
		var wg sync.WaitGroup
		for i := range builds {
			id := fmt.Sprintf("fleet-%d-%d", round, i)
			if err := s.CreateBuild(ctx, storetest.NewBuild(id, storetest.At(0))); err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, batch := range batches {
					if _, err := s.Append(ctx, id, batch, storetest.At(1)); err != nil {
						b.Error(err)
						return
					}
				}
				if _, _, err := s.Finish(ctx, id, &buildlog.Finish{Status: buildlog.StatusReady}, storetest.At(2)); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		appending += time.Since(start)
		b.StartTimer()
		n, err := s.Compact(ctx, 0)
		if err != nil || n != builds {
			b.Fatalf("Compact = %d, %v; want %d", n, err, builds)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*builds*appends), "µs/chunk")
	b.ReportMetric(float64(appending.Microseconds())/float64(b.N*builds*appends), "append-µs/chunk")
}
