package postgres_test

// Several servers on one database, as `buildlog serve --store postgres://`
// runs them: each node has its own store (its own pool and listener), its
// own live.Hub fed by WatchCommits, and the real HTTP API on loopback.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/httpapi"
	"buildlog/internal/live"
	"buildlog/internal/postgres"
	"buildlog/internal/sse"
	"buildlog/internal/storetest"
	"buildlog/internal/testkit"
)

const adminKey = "adm_cluster_test"

// node is one server of a cluster.
type node struct {
	t       testing.TB
	URL     string
	store   *postgres.Store
	hub     *live.Hub
	appName string       // application_name of its pool's connections
	resyncs atomic.Int32 // fn("") calls of WatchCommits: listener (re)established
}

// startNode starts a server on dsn, wired as serve.go wires one, and
// returns once its listener is in place. Keepalives are off (an hour): a
// keepalive makes a follower look at the store again, which would hide a
// missed wake-up; here a missed wake-up leaves a follower stuck, and the
// test fails. With wrap, the API serves wrap(store) (which must stay a
// CommitWatcher, for the API to treat it as the shared store it is) while
// the node's listener works on the store itself.
func startNode(t testing.TB, dsn string, wrap ...func(*postgres.Store) buildlog.Store) *node {
	t.Helper()
	n := &node{t: t, appName: fmt.Sprintf("buildlog-node-%08x", rand.Uint32()), hub: live.New(0)}
	dsn, err := postgres.WithParam(dsn, "application_name", n.appName)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if n.store, err = postgres.Open(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	secret, err := n.store.Secret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var served buildlog.Store = n.store
	for _, w := range wrap {
		served = w(n.store)
	}
	api := httpapi.New(httpapi.Config{Store: served, Hub: n.hub, AdminKey: adminKey, Secret: secret, Keepalive: time.Hour})
	bg, stop := context.WithCancel(ctx)
	listening := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		n.store.WatchCommits(bg, func(id string) {
			n.hub.Notify(id)
			if id == "" && n.resyncs.Add(1) == 1 {
				close(listening)
			}
		})
	}()
	ts := httptest.NewServer(api)
	n.URL = ts.URL
	t.Cleanup(func() {
		api.Drain()
		ts.Close()
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := api.Wait(wctx); err != nil {
			t.Errorf("streams still open 10s after Drain: %v", err)
		}
		wcancel()
		stop()
		<-watched
		n.store.Close()
	})
	select {
	case <-listening:
	case <-time.After(20 * time.Second):
		t.Fatal("listener not in place after 20s")
	}
	return n
}

// cluster starts two servers on one fresh schema.
func cluster(t testing.TB) (*node, *node) {
	dsn := postgres.FreshSchema(t)
	return startNode(t, dsn), startNode(t, dsn)
}

// do sends a request; body may be nil or a value to JSON-encode. It returns
// an error rather than failing, so that goroutines may call it.
func (n *node) do(method, path string, body any, hdr ...string) (int, []byte, error) {
	req, err := testkit.NewRequest(context.Background(), method, n.URL+path, adminKey, body, hdr...)
	if err != nil {
		return 0, nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// must is do that fails the test on anything but want.
func (n *node) must(want int, method, path string, body any, hdr ...string) []byte {
	n.t.Helper()
	code, b, err := n.do(method, path, body, hdr...)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	if code != want {
		n.t.Fatalf("%s %s: %d %s, want %d", method, path, code, b, want)
	}
	return b
}

func (n *node) newBuild(id string) {
	n.t.Helper()
	n.must(201, "POST", "/v1/templates/tmpl_1/builds", map[string]any{"build_id": id})
}

func lines(from, count int) []map[string]any {
	out := make([]map[string]any, count)
	for i := range out {
		out[i] = map[string]any{"message": "line " + strconv.Itoa(from+i)}
	}
	return out
}

// appendAt appends lines [from, from+count) with first_offset from, so that
// a retry of a batch whose reply was lost stores nothing twice.
func (n *node) appendAt(id string, from, count int) (int, []byte, error) {
	return n.do("POST", "/v1/templates/builds/"+id+"/logs",
		map[string]any{"entries": lines(from, count), "first_offset": from})
}

// follower reads a build's dialect A stream from its start offset to the
// terminal entry, checking that offset i carries "line i". Odd followers
// resume by Last-Event-ID, even ones by offset; a follower with dropEvery
// > 0 hangs up after a random number of entries up to dropEvery and
// reconnects where it left off. arrived, if set, is told when each offset
// arrived.
type follower struct {
	n         *node
	id        string
	f         int
	total     int // offset of the terminal entry
	dropEvery int
	arrived   func(offset uint64, at time.Time)
	// resume makes the follower behave as a client through an outage: a
	// refused connection or a stream cut short is retried after a pause
	// rather than being a failure.
	resume bool
}

// transient marks a failure a resuming follower retries.
type transient struct{ error }

func (fl *follower) run(start uint64) error {
	pos := start
	for attempt := 0; attempt < 300; attempt++ {
		done, err := fl.once(start, &pos)
		if _, ok := err.(transient); ok && fl.resume {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if done || err != nil {
			return err
		}
	}
	return fmt.Errorf("follower %d: too many reconnects", fl.f)
}

func (fl *follower) once(start uint64, pos *uint64) (done bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", fl.n.URL+"/v1/templates/builds/"+fl.id+"/logs?follow=true", nil)
	req.Header.Set("Authorization", "Bearer "+adminKey)
	if fl.f%2 == 1 && *pos > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(*pos-1, 10))
	} else {
		req.URL.RawQuery += "&offset=" + strconv.FormatUint(*pos, 10)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, transient{fmt.Errorf("follower %d: %v", fl.f, err)}
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		err := fmt.Errorf("follower %d: status %d at %d: %s", fl.f, res.StatusCode, *pos, b)
		if res.StatusCode == 503 {
			return false, transient{err}
		}
		return false, err
	}
	rd := sse.NewReader(res.Body)
	dropAfter := -1
	if fl.dropEvery > 0 {
		dropAfter = 1 + rand.IntN(fl.dropEvery)
	}
	for i := 0; i != dropAfter; i++ {
		ev, err := rd.Next()
		if err != nil {
			return false, transient{fmt.Errorf("follower %d from %d: stream ended at %d: %v", fl.f, start, *pos, err)}
		}
		now := time.Now()
		kind, err := testkit.FollowedEntry(ev, *pos)
		if err != nil {
			return false, fmt.Errorf("follower %d from %d: %w", fl.f, start, err)
		}
		if fl.arrived != nil {
			fl.arrived(*pos, now)
		}
		if kind == "end" {
			if *pos != uint64(fl.total) {
				return false, fmt.Errorf("follower %d: terminal entry at %d, want %d", fl.f, *pos, fl.total)
			}
			// The stream must end after the terminal entry.
			if _, err := rd.Next(); err != io.EOF {
				return false, fmt.Errorf("follower %d: after the terminal entry: %v, want the end of the stream", fl.f, err)
			}
			return true, nil
		}
		*pos++
	}
	return false, nil // hung up on purpose; reconnect
}

// TestClusterHandOver is the foundation's hand-over stress test across
// servers: the producer writes on server 1, twenty followers read on
// server 2, joining at random times and offsets, some by Last-Event-ID,
// some hanging up and reconnecting mid-stream. Each must see exactly the
// dense sequence from its start to the terminal entry.
func TestClusterHandOver(t *testing.T) {
	one, two := cluster(t)
	const id, total = "tb_handover", 5000
	one.newBuild(id)

	var mu sync.Mutex
	next := 0
	producerErr := make(chan error, 1)
	go func() {
		producerErr <- func() error {
			for next < total {
				count := min(1+rand.IntN(60), total-next)
				code, b, err := one.appendAt(id, next, count)
				if err != nil || code != 200 {
					return fmt.Errorf("append at %d: %d %s %v", next, code, b, err)
				}
				mu.Lock()
				next += count
				mu.Unlock()
			}
			code, b, err := one.do("POST", "/v1/templates/builds/"+id+"/finish", map[string]any{"status": "ready"})
			if err != nil || code != 200 {
				return fmt.Errorf("finish: %d %s %v", code, b, err)
			}
			return nil
		}()
	}()

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for f := range 20 {
		wg.Go(func() {
			time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
			mu.Lock()
			start := uint64(rand.IntN(next + 1))
			mu.Unlock()
			fl := &follower{n: two, id: id, f: f, total: total}
			if f%3 == 0 {
				fl.dropEvery = 400
			}
			errs <- fl.run(start)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if err := await(t, producerErr, 30*time.Second, "producer still running after the followers ended"); err != nil {
		t.Fatal(err)
	}
}

// TestClusterListenerDrop cuts server 2's LISTEN connection while its
// followers wait at the end of the log, and commits on server 1 before the
// listener is back, so server 2 never hears of those commits. The
// followers must still get every entry: a re-established listener tells
// the hub that notices may have been missed, and they read the store.
func TestClusterListenerDrop(t *testing.T) {
	// The listener then waits 0.5-1 s before reconnecting, so the appends
	// below land while it is surely gone.
	postgres.SetListenBackoff(t, time.Second)
	one, two := cluster(t)
	const id = "tb_listener"
	one.newBuild(id)
	one.must(200, "POST", "/v1/templates/builds/"+id+"/logs", map[string]any{"entries": lines(0, 10), "first_offset": 0})

	const followers, total = 5, 40
	// reached[i] is done when every follower has read offset i.
	reached := map[uint64]*sync.WaitGroup{9: {}, 29: {}}
	errs := make(chan error, followers)
	for f := range followers {
		onces := map[uint64]*sync.Once{}
		for off, wg := range reached {
			wg.Add(1)
			onces[off] = &sync.Once{}
		}
		fl := &follower{n: two, id: id, f: f, total: total, arrived: func(off uint64, _ time.Time) {
			if wg := reached[off]; wg != nil {
				onces[off].Do(wg.Done)
			}
		}}
		go func() { errs <- fl.run(0) }()
	}
	waitGroup(t, reached[9], "followers did not reach offset 9")

	ctx := t.Context()
	pid := two.store.ListenerPID()
	var killed bool
	if err := postgres.AdminPool().QueryRow(ctx, `SELECT pg_terminate_backend($1)`, int32(pid)).Scan(&killed); err != nil || !killed {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, killed, err)
	}
	one.must(200, "POST", "/v1/templates/builds/"+id+"/logs", map[string]any{"entries": lines(10, 20), "first_offset": 10})
	if got := two.store.ListenerPID(); got != pid {
		// Not a failure, only a weaker test: the machine was slow enough
		// for the listener to return before the append committed.
		t.Logf("listener was back (backend %d) before the append committed", got)
	}
	deadline := time.Now().Add(20 * time.Second)
	for two.resyncs.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("listener not re-established within 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := two.store.ListenerPID(); got == pid {
		t.Fatalf("listener still on backend %d", pid)
	}
	// Before any later commit could wake them, the followers have caught
	// up from the store on the listener's word alone.
	waitGroup(t, reached[29], "followers on server 2 did not get the entries committed while the listener was gone")
	// Live delivery works again on the new connection.
	one.must(200, "POST", "/v1/templates/builds/"+id+"/logs", map[string]any{"entries": lines(30, 10), "first_offset": 30})
	one.must(200, "POST", "/v1/templates/builds/"+id+"/finish", map[string]any{"status": "ready"})
	for range followers {
		if err := await(t, errs, 20*time.Second, "a follower on server 2 did not reach the terminal entry within 20s"); err != nil {
			t.Error(err)
		}
	}
}

// await returns what errs delivers first; when nothing comes within d,
// the test fails with msg.
func await(t *testing.T, errs <-chan error, d time.Duration, msg string) error {
	t.Helper()
	select {
	case err := <-errs:
		return err
	case <-time.After(d):
		t.Fatal(msg)
		return nil
	}
}

func waitGroup(t *testing.T, wg *sync.WaitGroup, msg string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal(msg)
	}
}

// deliveries appends count single-entry batches on one, one at a time, and
// returns how long each took from the append request being sent on one to
// its entry arriving on a stream from two.
func deliveries(tb testing.TB, one, two *node, id string, count int) []time.Duration {
	tb.Helper()
	one.newBuild(id)
	arrivals := make(chan time.Time, count+1)
	fl := &follower{n: two, id: id, total: count, arrived: func(_ uint64, at time.Time) { arrivals <- at }}
	done := make(chan error, 1)
	go func() { done <- fl.run(0) }()
	out := make([]time.Duration, 0, count)
	for i := range count {
		sent := time.Now()
		code, b, err := one.appendAt(id, i, 1)
		if err != nil || code != 200 {
			tb.Fatalf("append %d: %d %s %v", i, code, b, err)
		}
		select {
		case at := <-arrivals:
			out = append(out, at.Sub(sent))
		case err := <-done:
			tb.Fatalf("follower ended early: %v", err)
		case <-time.After(20 * time.Second):
			tb.Fatalf("entry %d not delivered on server 2 within 20s", i)
		}
	}
	one.must(200, "POST", "/v1/templates/builds/"+id+"/finish", map[string]any{"status": "ready"})
	if err := <-done; err != nil {
		tb.Fatal(err)
	}
	return out
}

func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// TestClusterDeliveryLatency checks SPEC's bound on cross-server delivery:
// an entry appended on server 1 reaches a follower on server 2 within 1 s.
// It asserts only that bound, for 95% of entries, so that a loaded machine
// does not fail it; the figures themselves are BenchmarkClusterDelivery's.
func TestClusterDeliveryLatency(t *testing.T) {
	one, two := cluster(t)
	ds := deliveries(t, one, two, "tb_latency", 200)
	p50, p95, p99 := quantile(ds, 0.5), quantile(ds, 0.95), quantile(ds, 0.99)
	t.Logf("append sent on server 1 → entry on server 2, %d entries: p50 %v, p95 %v, p99 %v, max %v",
		len(ds), p50, p95, p99, quantile(ds, 1))
	if p95 > time.Second {
		t.Errorf("p95 delivery %v, want within 1s", p95)
	}
}

// BenchmarkClusterDelivery measures from an append request sent to server 1
// to its entry arriving on an SSE stream from server 2 (so it includes the
// append's own commit), one single-entry batch at a time.
func BenchmarkClusterDelivery(b *testing.B) {
	one, two := cluster(b)
	var all []time.Duration
	i := 0
	for b.Loop() {
		all = append(all, deliveries(b, one, two, fmt.Sprintf("tb_bench_%d", i), 100)...)
		i++
	}
	b.ReportMetric(float64(quantile(all, 0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(quantile(all, 0.99).Microseconds()), "p99-µs")
	b.ReportMetric(0, "ns/op")
}

// errorCode returns error.code of a JSON error body, or "" if body is not one.
func errorCode(body []byte) string {
	var m struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if json.Unmarshal(body, &m) != nil || m.Error.Message == "" {
		return ""
	}
	return m.Error.Code
}

// producer appends lines with first_offset and, on a 503, retries the same
// batch, as a client should. It fails on any other answer, and counts the
// 503s it met.
type producer struct {
	n        *node
	id       string
	next     int // entries acknowledged
	failures int // 503 answers, each a JSON error with code unavailable
}

func (p *producer) append(count int, deadline time.Time) error {
	for {
		code, b, err := p.n.appendAt(p.id, p.next, count)
		switch {
		case err != nil:
			return err
		case code == 200:
			var raw struct {
				First *int `json:"first_offset"`
				Next  *int `json:"next_offset"`
			}
			if err := json.Unmarshal(b, &raw); err != nil || raw.First == nil || raw.Next == nil ||
				*raw.First != p.next || *raw.Next != p.next+count {
				return fmt.Errorf("append at %d: reply %s", p.next, b)
			}
			p.next += count
			return nil
		case code == 503 && errorCode(b) == "unavailable":
			p.failures++
			if time.Now().After(deadline) {
				return fmt.Errorf("append at %d: still 503 at the deadline: %s", p.next, b)
			}
			time.Sleep(10 * time.Millisecond)
		default:
			return fmt.Errorf("append at %d: %d %s", p.next, code, b)
		}
	}
}

// terminate ends every backend of n's pool, as a database restart or an
// operator would, and returns how many there were.
func terminate(t *testing.T, n *node) int {
	var count int
	err := postgres.AdminPool().QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid))
		FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1`, n.appName).Scan(&count)
	if err != nil {
		t.Errorf("terminating backends: %v", err)
	}
	return count
}

// TestClusterBackendsTerminated cuts every pool connection of the
// producer's server again and again while it appends. Appends may answer
// 503 (a JSON error), never anything else; retried with first_offset they
// go through once the pool has reconnected, by itself; and the follower on
// the other server gets every acknowledged entry once, in order.
func TestClusterBackendsTerminated(t *testing.T) {
	one, two := cluster(t)
	const id = "tb_terminated"
	one.newBuild(id)

	const total = 3000
	fl := &follower{n: two, id: id, total: total}
	followed := make(chan error, 1)
	go func() { followed <- fl.run(0) }()

	// A fixed number of cuts, with pauses in which the pool can reconnect:
	// cutting without pause on a loaded machine can starve the producer
	// for as long as it goes on, which proves nothing.
	const rounds = 40
	stop := make(chan struct{})
	var cuts, backends atomic.Int32
	var killer sync.WaitGroup
	killer.Go(func() {
		for range rounds {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(10+rand.IntN(40)) * time.Millisecond):
			}
			backends.Add(int32(terminate(t, one)))
			cuts.Add(1)
		}
	})
	p := &producer{n: one, id: id}
	deadline := time.Now().Add(60 * time.Second)
	for p.next < total {
		if err := p.append(min(1+rand.IntN(50), total-p.next), deadline); err != nil {
			close(stop)
			t.Fatal(err)
		}
		if p.next >= total/2 {
			// The rest is appended after the last cut: the pool must
			// serve it without any restart.
			killer.Wait()
		}
	}
	close(stop)
	killer.Wait()
	t.Logf("%d cuts ended %d backends; %d appends answered 503 and were retried", cuts.Load(), backends.Load(), p.failures)
	if p.failures == 0 {
		t.Error("no append failed while its connections were being cut: the test did not test anything")
	}
	// Recovered by itself: with the cuts over, the server is ready at once.
	one.must(200, "GET", "/readyz", nil)
	one.must(200, "POST", "/v1/templates/builds/"+id+"/finish", map[string]any{"status": "ready"})
	if err := await(t, followed, 30*time.Second, "follower on server 2 did not reach the terminal entry"); err != nil {
		t.Fatal(err)
	}
	var b struct {
		Next int `json:"next_offset"`
	}
	json.Unmarshal(two.must(200, "GET", "/v1/templates/builds/"+id, nil), &b)
	if b.Next != total+1 {
		t.Errorf("next_offset %d, want %d: entries stored twice or lost", b.Next, total+1)
	}
}

// TestClusterDatabaseDown stops the database under server 1 (through a
// proxy) and starts it again. Meanwhile appends and /readyz on server 1
// answer 503 with a JSON error, a reader that connects is turned away with
// a 503 and resumes later, and nothing acknowledged is lost; once the
// database is back, server 1 recovers by itself, without a restart, and a
// follower on server 1 hears of commits made on server 2 again.
func TestClusterDatabaseDown(t *testing.T) {
	dsn := postgres.FreshSchema(t)
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		t.Skip("this test needs BUILDLOG_TEST_POSTGRES as a postgres:// URL")
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "5432")
	}
	// A TCP relay to PostgreSQL that the test takes down and brings back:
	// to server 1 behind it, the database stops and restarts, while the
	// shared PostgreSQL server, which other tests use, stays up.
	px := testkit.NewProxy(t, target)
	u.Host = px.Addr
	one, two := startNode(t, u.String()), startNode(t, dsn)

	const id = "tb_down"
	one.newBuild(id)
	p := &producer{n: one, id: id}
	if err := p.append(10, time.Now()); err != nil {
		t.Fatal(err)
	}
	// Followers of the whole log on both servers; the one on server 1
	// ends up reading what server 2 writes after the outage.
	const total = 40
	followed := make(chan error, 2)
	var caughtUp sync.WaitGroup
	caughtUp.Add(2)
	for f, n := range []*node{one, two} {
		var once sync.Once
		fl := &follower{n: n, id: id, f: 2 * f, total: total, resume: true, arrived: func(off uint64, _ time.Time) {
			if off == 9 {
				once.Do(caughtUp.Done)
			}
		}}
		go func() { followed <- fl.run(0) }()
	}
	waitGroup(t, &caughtUp, "followers did not reach offset 9")

	px.Down()
	for i := range 5 {
		code, b, err := one.appendAt(id, 10, 5)
		if err != nil || code != 503 || errorCode(b) != "unavailable" {
			t.Fatalf("append %d with the database down: %d %s %v, want 503 unavailable", i, code, b, err)
		}
	}
	if code, b, _ := one.do("GET", "/readyz", nil); code != 503 || errorCode(b) != "unavailable" {
		t.Errorf("/readyz with the database down: %d %s, want 503 unavailable", code, b)
	}
	if code, b, _ := one.do("GET", "/v1/templates/builds/"+id+"/logs", nil, "Last-Event-ID", "4"); code != 503 || errorCode(b) != "unavailable" {
		t.Errorf("a reader connecting with the database down: %d %s, want 503 unavailable", code, b)
	}
	// Server 2, on its own connection, goes on working meanwhile.
	two.must(200, "GET", "/readyz", nil)

	px.Up(t)
	// Recovery takes no restart: the producer's retries go through.
	if err := p.append(10, time.Now().Add(20*time.Second)); err != nil {
		t.Fatal(err)
	}
	one.must(200, "GET", "/readyz", nil)
	// The reader turned away resumes where it was.
	body := one.must(200, "GET", "/v1/templates/builds/"+id+"/logs", nil, "Last-Event-ID", "4")
	if ev, err := sse.NewReader(bytes.NewReader(body)).Next(); err != nil || ev.ID != "5" {
		t.Errorf("resumed read starts with id %q (%v), want 5:\n%.300s", ev.ID, err, body)
	}
	// Server 1's listener is back too: its follower sees server 2's
	// commits (there is no local publish for them to ride on).
	p.n = two
	if err := p.append(20, time.Now().Add(20*time.Second)); err != nil {
		t.Fatal(err)
	}
	two.must(200, "POST", "/v1/templates/builds/"+id+"/finish", map[string]any{"status": "ready"})
	for range 2 {
		if err := await(t, followed, 30*time.Second, "a follower did not reach the terminal entry within 30s"); err != nil {
			t.Error(err)
		}
	}
}

// TestClusterConcurrentWriters has producers on both servers appending to
// one build at once, and followers on both servers. Each server then
// learns of the other's commits only by notice, interleaved with its own
// commits; every follower must still see the dense log to its terminal
// entry, which the last producer writes.
func TestClusterConcurrentWriters(t *testing.T) {
	one, two := cluster(t)
	const id = "tb_writers"
	one.newBuild(id)
	const producers, batches = 4, 60
	var wg sync.WaitGroup
	var total atomic.Int64
	errs := make(chan error, producers)
	for w := range producers {
		n := []*node{one, two}[w%2]
		wg.Go(func() {
			for i := range batches {
				count := 1 + rand.IntN(5)
				code, b, err := n.do("POST", "/v1/templates/builds/"+id+"/logs", lines(0, count))
				if err != nil || code != 200 {
					errs <- fmt.Errorf("producer %d batch %d: %d %s %v", w, i, code, b, err)
					return
				}
				total.Add(int64(count))
			}
		})
	}
	// Followers read ids only: the producers' lines interleave.
	type result struct {
		n    int
		last string
		err  error
	}
	results := make(chan result, 6)
	for f := range 6 {
		n := []*node{one, two}[f%2]
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", n.URL+"/v1/templates/builds/"+id+"/logs?follow=true", nil)
			req.Header.Set("Authorization", "Bearer "+adminKey)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				results <- result{err: err}
				return
			}
			defer res.Body.Close()
			rd := sse.NewReader(res.Body)
			var r result
			for {
				ev, err := rd.Next()
				if err == io.EOF {
					results <- r
					return
				}
				if err != nil {
					r.err = fmt.Errorf("follower %d after %d events: %v", f, r.n, err)
					results <- r
					return
				}
				if ev.ID != strconv.Itoa(r.n) {
					r.err = fmt.Errorf("follower %d: id %s, want %d", f, ev.ID, r.n)
					results <- r
					return
				}
				r.n++
				r.last = string(ev.Data)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	one.must(200, "POST", "/v1/templates/builds/"+id+"/finish", map[string]any{"status": "ready"})
	want := int(total.Load()) + 1
	for range 6 {
		r := <-results
		if r.err != nil {
			t.Error(r.err)
		} else if r.n != want || !bytes.Contains([]byte(r.last), []byte(`"kind":"end"`)) {
			t.Errorf("a follower got %d events ending %s, want %d ending with the terminal entry", r.n, r.last, want)
		}
	}
}

// lateStore runs meanwhile after each Append has committed and before it
// returns: what another server may do in the moment between a commit and
// its publication to the local hub.
type lateStore struct {
	*postgres.Store
	meanwhile func()
}

func (s lateStore) Append(ctx context.Context, id string, b *buildlog.Batch, now time.Time) (buildlog.AppendResult, error) {
	res, err := s.Store.Append(ctx, id, b, now)
	if err == nil && s.meanwhile != nil {
		s.meanwhile()
	}
	return res, err
}

// TestLatePublishAfterRemoteCommit pins down one interleaving that the
// stress tests hit only by chance. Server 1 commits entry 1; before it
// publishes that commit to its hub, server 2 finishes the build (entry 2)
// and server 1 hears the notice. The late publication must not make server
// 1's memory claim that its log ends at 2: a follower there would wait for
// the terminal entry forever.
func TestLatePublishAfterRemoteCommit(t *testing.T) {
	dsn := postgres.FreshSchema(t)
	ctx := t.Context()
	one, two := testkit.OpenStore(t, postgres.Open, dsn), testkit.OpenStore(t, postgres.Open, dsn)
	hub := live.New(0)
	const id = "tb_late"
	if err := one.CreateBuild(ctx, storetest.NewBuild(id, storetest.At(0))); err != nil {
		t.Fatal(err)
	}
	st := lateStore{Store: one}
	pub := hub.Publishing(st)
	if _, err := pub.Append(ctx, id, storetest.BatchOf("zero"), storetest.At(1)); err != nil {
		t.Fatal(err)
	}
	f := hub.Follow(id)
	defer f.Close()

	st.meanwhile = func() {
		fin := &buildlog.Finish{Status: buildlog.StatusReady, Timestamp: storetest.Timestamp}
		if _, _, err := two.Finish(ctx, id, fin, storetest.At(3)); err != nil {
			t.Error(err)
		}
		hub.Notify(id) // the notice of server 2's commit, as WatchCommits delivers it
	}
	pub = hub.Publishing(st)
	if _, err := pub.Append(ctx, id, storetest.BatchOf("one"), storetest.At(2)); err != nil {
		t.Fatal(err)
	}

	// Read as the HTTP layer's readLog does: memory when it answers, the
	// store otherwise, from offset 1 to the terminal entry.
	for pos := uint64(1); ; {
		chunks, ok := f.Read(pos)
		if !ok {
			var err error
			if chunks, err = one.ReadLog(ctx, id, pos, 1<<20); err != nil {
				t.Fatal(err)
			}
		}
		if len(chunks) == 0 {
			t.Fatalf("at offset %d, memory answered %v and there is nothing to read; the store holds entries up to 3 and a waiting follower would never hear of them", pos, ok)
		}
		last := chunks[len(chunks)-1]
		if last.Terminal {
			break
		}
		pos = last.End()
	}
}

// A key revoked through one server is refused by another at its very next
// append, although that server's append path remembers the key: the
// transaction that would store the batch checks the key in the database.
func TestClusterRevocationSeenAtOnce(t *testing.T) {
	one, two := cluster(t)
	one.newBuild("tb_revoked")
	var k struct{ ID, Key string }
	if err := json.Unmarshal(one.must(201, "POST", "/v1/keys", map[string]any{"team": "default", "scopes": []string{"write"}}), &k); err != nil {
		t.Fatal(err)
	}
	auth := []string{"Authorization", "Bearer " + k.Key}
	two.must(200, "POST", "/v1/templates/builds/tb_revoked/logs", lines(0, 3), auth...)
	one.must(204, "DELETE", "/v1/keys/"+k.ID, nil)
	two.must(401, "POST", "/v1/templates/builds/tb_revoked/logs", lines(3, 3), auth...)
	var b struct {
		Next uint64 `json:"next_offset"`
	}
	json.Unmarshal(one.must(200, "GET", "/v1/templates/builds/tb_revoked", nil), &b)
	if b.Next != 3 {
		t.Errorf("next offset %d after the revoked key's append, want 3", b.Next)
	}
}

// countingStore is the real PostgreSQL store with the calls followers make
// counted. Embedding keeps it a CommitWatcher, so the API treats it as the
// shared store it is.
type countingStore struct {
	*postgres.Store
	reads, builds atomic.Int64
}

func (s *countingStore) ReadLog(ctx context.Context, id string, from uint64, max int) ([]buildlog.Chunk, error) {
	s.reads.Add(1)
	return s.Store.ReadLog(ctx, id, from, max)
}

func (s *countingStore) Build(ctx context.Context, id string) (*buildlog.Build, error) {
	s.builds.Add(1)
	return s.Store.Build(ctx, id)
}

// On the committing server each commit wakes the followers twice (its own
// notice, then the database's); followers woken together share one store
// read and one status check, so the store's load does not grow with the
// number of followers.
func TestFollowersShareStoreCalls(t *testing.T) {
	var st *countingStore
	n := startNode(t, postgres.FreshSchema(t), func(pg *postgres.Store) buildlog.Store {
		st = &countingStore{Store: pg}
		return st
	})

	const followers, commits = 40, 15
	const id = "tb_fanout_share"
	n.newBuild(id)
	n.must(200, "POST", "/v1/templates/builds/"+id+"/logs", map[string]any{"entries": lines(0, 1), "first_offset": 0})

	var got atomic.Int64 // entries received, over all followers
	var wg sync.WaitGroup
	errs := make(chan error, followers)
	for range followers {
		req, _ := http.NewRequest("GET", n.URL+"/v1/templates/builds/"+id+"/logs?follow=true", nil)
		req.Header.Set("Authorization", "Bearer "+adminKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != 200 {
			t.Fatalf("follow: %d", res.StatusCode)
		}
		wg.Go(func() {
			defer res.Body.Close()
			rd := sse.NewReader(res.Body)
			for {
				ev, err := rd.Next()
				if err != nil {
					errs <- err
					return
				}
				got.Add(1)
				if ev.ID == "16" { // the terminal entry
					return
				}
			}
		})
	}
	until := func(want int64) {
		deadline := time.Now().Add(30 * time.Second)
		for got.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("followers received %d entries, want %d", got.Load(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	until(followers)
	time.Sleep(200 * time.Millisecond) // the first entry's notices have come and gone
	reads0, builds0 := st.reads.Load(), st.builds.Load()
	for c := 1; c <= commits; c++ {
		n.must(200, "POST", "/v1/templates/builds/"+id+"/logs", map[string]any{"entries": lines(c, 1), "first_offset": c})
		until(int64(followers * (c + 1)))
		time.Sleep(20 * time.Millisecond) // let the database's notice of it arrive before the next
	}
	reads, builds := st.reads.Load()-reads0, st.builds.Load()-builds0
	n.must(200, "POST", "/v1/templates/builds/"+id+"/finish", map[string]any{"status": "ready"})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Unshared, each commit costs every follower a status check on its
	// second wake-up (and a read on each): followers × commits. Shared,
	// a few per commit, however many follow: followers holding different
	// wake channels (one read before the second notice, one after) are
	// separate groups.
	t.Logf("%d commits to %d followers: %d store reads, %d status checks", commits, followers, reads, builds)
	if limit := int64(6 * commits); reads > limit || builds > limit {
		t.Fatalf("%d commits to %d followers made %d store reads and %d status checks, want at most %d each",
			commits, followers, reads, builds, limit)
	}
}
