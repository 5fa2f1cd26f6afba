package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/storetest"
	"buildlog/internal/wire"
)

// testDB is the database this run created, or nil when
// BUILDLOG_TEST_POSTGRES is unset.
var testDB *Scratch

// TestMain creates one fresh database for the run and drops it at the end,
// so that runs (here and in CI) never see each other's data. The env var
// names a server where the test may create databases.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	admin := os.Getenv("BUILDLOG_TEST_POSTGRES")
	if admin == "" {
		return m.Run()
	}
	var err error
	if testDB, err = NewScratch(context.Background(), admin, "buildlog_test_"); err != nil {
		fmt.Fprintf(os.Stderr, "BUILDLOG_TEST_POSTGRES: %v\n", err)
		return 1
	}
	defer func() {
		if err := testDB.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	return m.Run()
}

// freshSchema makes an empty schema in the run's database, dropped when t
// ends, and returns a DSN whose search_path puts migrations and queries
// there.
func freshSchema(t testing.TB) string {
	t.Helper()
	if testDB == nil {
		t.Skip("BUILDLOG_TEST_POSTGRES is unset: set it to a DSN of a server where tests may create databases")
	}
	dsn, drop, err := testDB.Schema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := drop(); err != nil {
			t.Error(err)
		}
	})
	return dsn
}

// open opens a store on dsn, closed when t ends (before its schema is
// dropped: cleanups run last first).
func open(t testing.TB, dsn string) *Store {
	t.Helper()
	s, err := Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newStore(t *testing.T) *Store { return open(t, freshSchema(t)) }

func TestConformance(t *testing.T) {
	freshSchema(t) // skips the whole suite without a server
	storetest.Run(t, func(t *testing.T) buildlog.Store { return newStore(t) })
}

// twoServers returns two stores on one schema: two pools, as two servers
// sharing a database have.
func twoServers(t *testing.T) (*Store, *Store) {
	dsn := freshSchema(t)
	return open(t, dsn), open(t, dsn)
}

// sharedBuild returns two servers on one schema and build id, created
// through the first.
func sharedBuild(t *testing.T, id string) (a, b *Store, build *buildlog.Build) {
	t.Helper()
	a, b = twoServers(t)
	build = storetest.NewBuild(id, storetest.At(0))
	if err := a.CreateBuild(t.Context(), build); err != nil {
		t.Fatal(err)
	}
	return a, b, build
}

func TestAppendAcrossServers(t *testing.T) {
	a, b, build := sharedBuild(t, "shared")
	ctx := t.Context()
	type answer struct {
		res buildlog.AppendResult
		n   int
	}
	var (
		mu      sync.Mutex
		answers []answer
		wg      sync.WaitGroup
	)
	for w := range 8 {
		s := []*Store{a, b}[w%2]
		wg.Go(func() {
			for i := range 25 {
				n := 1 + (w+i)%7
				res, err := s.Append(ctx, build.ID, storetest.BatchOf(storetest.Messages(fmt.Sprintf("w%d b%d", w, i), n)...), storetest.At(1+i))
				if err != nil {
					t.Errorf("Append on server %d: %v", w%2, err)
					return
				}
				mu.Lock()
				answers = append(answers, answer{res, n})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	sort.Slice(answers, func(i, j int) bool { return answers[i].res.FirstOffset < answers[j].res.FirstOffset })
	var next uint64
	for _, ans := range answers {
		if ans.res.FirstOffset != next || ans.res.NextOffset != next+uint64(ans.n) {
			t.Fatalf("batch of %d got [%d, %d), want to start at %d", ans.n, ans.res.FirstOffset, ans.res.NextOffset, next)
		}
		next = ans.res.NextOffset
	}
	for _, s := range []*Store{a, b} {
		got, err := s.Build(ctx, build.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.NextOffset != next {
			t.Errorf("NextOffset = %d, want %d", got.NextOffset, next)
		}
		lines := storetest.Lines(t, storetest.ReadAll(t, s, build.ID))
		if uint64(len(lines)) != next {
			t.Errorf("%d lines stored, want %d", len(lines), next)
		}
	}
}

func TestRetryOnOtherServer(t *testing.T) {
	a, b, build := sharedBuild(t, "retry")
	ctx := t.Context()
	first, err := a.Append(ctx, build.ID, storetest.RetryBatchOf(0, "x", "y"), storetest.At(1))
	if err != nil {
		t.Fatal(err)
	}
	// The producer lost a's reply and its retry lands on b.
	again, err := b.Append(ctx, build.ID, storetest.RetryBatchOf(0, "x", "y"), storetest.At(2))
	if err != nil {
		t.Fatalf("retry on the other server: %v", err)
	}
	if !again.Replayed || again.FirstOffset != first.FirstOffset || again.NextOffset != first.NextOffset {
		t.Errorf("retry = %+v, want a replay of %+v", again, first)
	}
	_, err = b.Append(ctx, build.ID, storetest.RetryBatchOf(0, "x", "changed"), storetest.At(3))
	var e *buildlog.Error
	if !errors.As(err, &e) || e.Code != buildlog.EConflict || e.NextOffset == nil || *e.NextOffset != 2 {
		t.Errorf("different batch at 0 on the other server: %v, want conflict at next offset 2", err)
	}
	if got := storetest.ReadAll(t, a, build.ID); len(got) != 1 {
		t.Errorf("%d chunks stored, want 1", len(got))
	}
}

// TestIdleSweepAcrossServers runs the idle sweep on two servers at once:
// each silent build must get exactly one terminal entry.
func TestIdleSweepAcrossServers(t *testing.T) {
	a, b := twoServers(t)
	ctx := t.Context()
	const n = 20
	for i := range n {
		build := storetest.NewBuild(fmt.Sprintf("idle-%d", i), storetest.At(0))
		if err := a.CreateBuild(ctx, build); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Append(ctx, build.ID, storetest.BatchOf("hello"), storetest.At(1)); err != nil {
			t.Fatal(err)
		}
	}
	var (
		sealed atomic.Int64
		wg     sync.WaitGroup
	)
	for _, s := range []*Store{a, b} {
		wg.Go(func() {
			ids, err := s.IdleBuilds(ctx, storetest.At(60), 100)
			if err != nil {
				t.Errorf("IdleBuilds: %v", err)
				return
			}
			for _, id := range ids {
				f := &buildlog.Finish{Status: buildlog.StatusTimeout, Timestamp: storetest.Timestamp, IdleBefore: storetest.At(60)}
				_, chunk, err := s.Finish(ctx, id, f, storetest.At(61))
				if err != nil {
					t.Errorf("Finish(%s): %v", id, err)
					continue
				}
				if chunk.Count > 0 {
					sealed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := sealed.Load(); got != n {
		t.Errorf("%d terminal entries written, want %d", got, n)
	}
	for i := range n {
		chunks := storetest.ReadAll(t, a, fmt.Sprintf("idle-%d", i))
		terminal := 0
		for _, c := range chunks {
			if c.Terminal {
				terminal++
			}
		}
		if len(chunks) != 2 || terminal != 1 {
			t.Errorf("idle-%d: %d chunks, %d terminal; want the append and one terminal", i, len(chunks), terminal)
		}
	}
}

// TestConcurrentFirstOpen starts several servers on an empty schema at
// once: the advisory lock lets one migrate, and all agree on the secret.
func TestConcurrentFirstOpen(t *testing.T) {
	dsn := freshSchema(t)
	const n = 4
	stores := make([]*Store, n)
	secrets := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = Open(t.Context(), dsn)
			if errs[i] == nil {
				secrets[i], errs[i] = stores[i].Secret(t.Context())
			}
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if stores[i] != nil {
			t.Cleanup(func() { stores[i].Close() })
		}
		if errs[i] != nil {
			t.Fatalf("server %d: %v", i, errs[i])
		}
		if string(secrets[i]) != string(secrets[0]) {
			t.Errorf("server %d has another secret", i)
		}
	}
	var applied, total int
	err := stores[0].pool.QueryRow(t.Context(), `SELECT count(DISTINCT version), count(*) FROM schema_migrations`).Scan(&applied, &total)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if applied != len(ms) || total != len(ms) {
		t.Errorf("schema_migrations: %d versions in %d rows, want %d once each", applied, total, len(ms))
	}
	// A later start finds nothing to do.
	open(t, dsn)
}

// Chunks use lz4 where the server has it (migration 0002), and a server
// without it still migrates.
func TestChunksCompression(t *testing.T) {
	s := newStore(t)
	var method string
	err := s.pool.QueryRow(t.Context(), `SELECT attcompression::text FROM pg_attribute
		WHERE attrelid = 'chunks'::regclass AND attname = 'data'`).Scan(&method)
	if err != nil {
		t.Fatal(err)
	}
	_, lz4err := s.pool.Exec(t.Context(), `CREATE TEMP TABLE lz4_probe (d bytea COMPRESSION lz4)`)
	switch {
	case lz4err == nil && method != "l":
		t.Errorf("chunks.data compression %q, want l (lz4): the server has lz4", method)
	case lz4err != nil && method != "":
		t.Errorf("chunks.data compression %q without lz4 on the server (%v)", method, lz4err)
	}
	// A chunk written now reads back byte for byte (the conformance suite
	// covers the rest), and is stored compressed.
	ctx := t.Context()
	if err := s.CreateBuild(ctx, storetest.NewBuild("lz4", storetest.At(0))); err != nil {
		t.Fatal(err)
	}
	batch := wire.NewBatch(entries150(1000), nil, nil)
	if _, err := s.Append(ctx, "lz4", batch, storetest.At(1)); err != nil {
		t.Fatal(err)
	}
	chunks, err := s.ReadLog(ctx, "lz4", 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := wire.EncodeBatch(batch, "lz4", "tmpl_1", 0)
	if len(chunks) != 1 || !bytes.Equal(chunks[0].Data, want) {
		t.Fatalf("read back %d chunks, want the %d bytes written", len(chunks), len(want))
	}
	var stored, raw int
	if err := s.pool.QueryRow(ctx, `SELECT pg_column_size(data), octet_length(data) FROM chunks WHERE build_id = 'lz4'`).Scan(&stored, &raw); err != nil {
		t.Fatal(err)
	}
	t.Logf("a 1,000-entry chunk: %d bytes stored for %d (compression %q)", stored, raw, method)
	if stored >= raw {
		t.Errorf("chunk stored in %d bytes for %d: not compressed", stored, raw)
	}
}

// watcher records what WatchCommits reports.
type watcher struct {
	mu      sync.Mutex
	resyncs int
	seen    map[string]time.Time
	wake    chan struct{}
}

func watch(t *testing.T, s *Store) *watcher {
	w := &watcher{seen: map[string]time.Time{}, wake: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.WatchCommits(ctx, w.notice) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("WatchCommits returned %v, want context.Canceled", err)
		}
	})
	return w
}

func (w *watcher) notice(id string) {
	now := time.Now()
	w.mu.Lock()
	if id == "" {
		w.resyncs++
	} else if _, ok := w.seen[id]; !ok {
		w.seen[id] = now
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// waitFor waits until cond holds, reporting false after a while.
func (w *watcher) waitFor(cond func() bool) bool {
	deadline := time.After(15 * time.Second)
	for {
		w.mu.Lock()
		ok := cond()
		w.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-w.wake:
		case <-deadline:
			return false
		}
	}
}

func TestWatchCommits(t *testing.T) {
	a, b := twoServers(t)
	ctx := t.Context()
	w := watch(t, b)
	// The first fn("") says the listener is in place.
	if !w.waitFor(func() bool { return w.resyncs == 1 }) {
		t.Fatal("no fn(\"\") once listening")
	}

	// appendAndWait appends on a and returns how long b took to hear of it,
	// counted from the call and from its return. The notice may come
	// before the return: the server sends it at commit, before the reply.
	appendAndWait := func(id string) (sinceCall, sinceReturn time.Duration) {
		t.Helper()
		if err := a.CreateBuild(ctx, storetest.NewBuild(id, storetest.At(0))); err != nil {
			t.Fatal(err)
		}
		called := time.Now()
		if _, err := a.Append(ctx, id, storetest.BatchOf("hello"), storetest.At(1)); err != nil {
			t.Fatal(err)
		}
		returned := time.Now()
		if !w.waitFor(func() bool { _, ok := w.seen[id]; return ok }) {
			t.Fatalf("server b never heard of the append to %s on a", id)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.seen[id].Sub(called), w.seen[id].Sub(returned)
	}
	var fromCall, fromReturn []time.Duration
	for i := range 50 {
		c, r := appendAndWait(fmt.Sprintf("watched-%d", i))
		fromCall, fromReturn = append(fromCall, c), append(fromReturn, r)
	}
	t.Logf("notice on server b after Append on a was called: %s; after it returned: %s", spread(fromCall), spread(fromReturn))

	// Finish notifies too.
	w.mu.Lock()
	delete(w.seen, "watched-0")
	w.mu.Unlock()
	if _, _, err := a.Finish(ctx, "watched-0", &buildlog.Finish{Status: buildlog.StatusReady, Timestamp: storetest.Timestamp}, storetest.At(2)); err != nil {
		t.Fatal(err)
	}
	if !w.waitFor(func() bool { _, ok := w.seen["watched-0"]; return ok }) {
		t.Fatal("no notice of Finish")
	}

	// Cut the listener's connection: it must come back, say that notices
	// may have been missed, and deliver later notices.
	pid := b.listenerPID.Load()
	var killed bool
	if err := a.pool.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, int32(pid)).Scan(&killed); err != nil || !killed {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, killed, err)
	}
	if !w.waitFor(func() bool { return w.resyncs == 2 }) {
		t.Fatal("no fn(\"\") after the listener was cut")
	}
	if got := b.listenerPID.Load(); got == pid {
		t.Errorf("listener still on backend %d", pid)
	}
	appendAndWait("after-reconnect")
}

// spread summarises durations as min, median and max.
func spread(ds []time.Duration) string {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return fmt.Sprintf("min %v, median %v, max %v", ds[0], ds[len(ds)/2], ds[len(ds)-1])
}

func TestWatchCommitsEndsOnClose(t *testing.T) {
	s := newStore(t)
	done := make(chan error, 1)
	go func() { done <- s.WatchCommits(context.Background(), func(string) {}) }()
	s.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("WatchCommits after Close returned nil, want an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WatchCommits still running after Close")
	}
}

// TestPoolRecovers cuts every connection of a server's pool: calls may fail
// meanwhile, but only as store failures (a plain error, a 503), never as
// a buildlog.Error a client would take as an answer; and the pool then
// reconnects by itself.
func TestPoolRecovers(t *testing.T) {
	dsn := freshSchema(t)
	dsn, err := WithParam(dsn, "application_name", "buildlog-"+randomHex(4))
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, dsn)
	ctx := t.Context()
	if err := s.CreateBuild(ctx, storetest.NewBuild("b", storetest.At(0))); err != nil {
		t.Fatal(err)
	}
	name := s.pool.Config().ConnConfig.RuntimeParams["application_name"]
	cut := func() {
		t.Helper()
		var n int
		err := testDB.Pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1`, name).Scan(&n)
		if err != nil || n == 0 {
			t.Fatalf("terminated %d backends: %v", n, err)
		}
	}
	for round := range 3 {
		cut()
		var ok bool
		for try := 0; try < 10 && !ok; try++ {
			_, err := s.Append(ctx, "b", storetest.BatchOf(fmt.Sprintf("round %d", round)), storetest.At(1))
			var e *buildlog.Error
			switch {
			case err == nil:
				ok = true
			case errors.As(err, &e):
				t.Fatalf("Append after its connection was cut: %v, a buildlog.Error; want a plain store failure", err)
			default:
				t.Logf("round %d, try %d: %v", round, try, err)
			}
		}
		if !ok {
			t.Fatalf("round %d: the pool did not recover", round)
		}
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("Ping after recovery: %v", err)
		}
	}
	if b, err := s.Build(ctx, "b"); err != nil || b.NextOffset != 3 {
		t.Errorf("Build = %+v, %v; want 3 entries", b, err)
	}
}

// TestStoreFailuresArePlainErrors checks that failures of the database
// itself reach callers as plain errors, which the HTTP layer shows as 503.
func TestStoreFailuresArePlainErrors(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	if _, err := s.pool.Exec(ctx, `DROP TABLE chunks`); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBuild(ctx, storetest.NewBuild("b", storetest.At(0))); err != nil {
		t.Fatal(err)
	}
	_, err := s.Append(ctx, "b", storetest.BatchOf("x"), storetest.At(1))
	if !plainError(err) {
		t.Errorf("Append with its table gone: %v, want a plain error", err)
	}

	expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	if _, err := s.Build(expired, "b"); !plainError(err) {
		t.Errorf("Build past its deadline: %v, want a plain error", err)
	}
	s.Close()
	if err := s.Ping(ctx); !plainError(err) {
		t.Errorf("Ping after Close: %v, want a plain error", err)
	}

	u := "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"
	if _, err := Open(ctx, u); !plainError(err) {
		t.Errorf("Open of an unreachable server: %v, want a plain error", err)
	}
}

// entries150 is a batch of n entries of about 150 bytes each once stored,
// as the measurements in MEASUREMENTS.md use.
func entries150(n int) []buildlog.Entry {
	es := make([]buildlog.Entry, n)
	for i := range es {
		es[i] = buildlog.Entry{Timestamp: "2026-03-17T00:00:12.123456Z", Kind: buildlog.KindMessage, Level: buildlog.LevelInfo,
			Message: fmt.Sprintf("compiled unit %04d", i)}
	}
	return es
}

// BenchmarkAppend appends 1000-entry batches round-robin over 100 builds,
// one writer, each batch one transaction.
func BenchmarkAppend(b *testing.B) {
	storetest.BenchAppend(b, open(b, freshSchema(b)), wire.NewBatch(entries150(1000), nil, nil))
}

// BenchmarkReadLog replays a 100,000-entry log from offset 0 a chunk at a
// time (pages of 1000 entries), as a follower catching up does.
func BenchmarkReadLog(b *testing.B) {
	s := open(b, freshSchema(b))
	ctx := context.Background()
	const size, batches = 1000, 100
	if err := s.CreateBuild(ctx, storetest.NewBuild("replay", storetest.At(0))); err != nil {
		b.Fatal(err)
	}
	batch := wire.NewBatch(entries150(size), nil, nil)
	for range batches {
		if _, err := s.Append(ctx, "replay", batch, storetest.At(1)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	entries := 0
	for b.Loop() {
		for from := uint64(0); ; {
			chunks, err := s.ReadLog(ctx, "replay", from, 1)
			if err != nil {
				b.Fatal(err)
			}
			if len(chunks) == 0 {
				break
			}
			for _, c := range chunks {
				entries += c.Count
				from = c.End()
			}
		}
	}
	b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkNotifyDelay measures from Append returning on one server to the
// notice arriving at another's WatchCommits.
func BenchmarkNotifyDelay(b *testing.B) {
	dsn := freshSchema(b)
	a, s := open(b, dsn), open(b, dsn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	notices := make(chan string, 16)
	go s.WatchCommits(ctx, func(id string) {
		select {
		case notices <- id:
		case <-ctx.Done():
		}
	})
	if id := <-notices; id != "" {
		b.Fatalf("first notice %q, want the listening signal", id)
	}
	if err := a.CreateBuild(ctx, storetest.NewBuild("notify", storetest.At(0))); err != nil {
		b.Fatal(err)
	}
	batch := storetest.BatchOf("x")
	var total time.Duration
	n := 0
	for b.Loop() {
		if _, err := a.Append(ctx, "notify", batch, storetest.At(1)); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for id := range notices {
			if id == "notify" {
				break
			}
		}
		total += time.Since(start)
		n++
	}
	b.ReportMetric(float64(total.Microseconds())/float64(n), "µs-delay")
}

// plainError reports whether err is a failure of the store itself: an
// error without a buildlog code, which the API answers as unavailable.
func plainError(err error) bool {
	var e *buildlog.Error
	return err != nil && !errors.As(err, &e)
}
