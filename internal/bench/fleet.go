package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fleet: a build farm's ingest. N producers, each on a build of its own,
// append K-entry batches back to back (closed loop, keep-alive, with
// first_offset as a real producer sends it) for FleetDuration. Baseline:
// the same loop against a private durable Redis (appendfsync always), each
// client pipelining its K entries as XADDs to a stream of its own. The two
// alternate round by round, so both see the same machine.
func (r *runner) fleet(ctx context.Context) error {
	cfg := r.cfg
	N, K := cfg.FleetBuilds, cfg.FleetBatch
	// Each producer holds an HTTP connection and, during Redis rounds, a
	// Redis one; served from this process, the server's side too.
	if err := r.checkFiles(N, 2*N, N); err != nil {
		return fmt.Errorf("--builds %d: %w", N, err)
	}
	bin, why := findRedis(cfg.Redis)
	var rs *redisServer
	if bin != "" {
		var err error
		if rs, err = startRedis(ctx, bin, r.tmp); err != nil {
			return fmt.Errorf("the Redis comparison (--redis none runs without it): %w", err)
		}
		defer rs.Close()
		r.progress("fleet: redis-server %s on %s (appendonly yes, appendfsync always, no snapshots)", rs.Version, rs.Addr)
	}
	pool := newFleetPool(K)
	r.progress("fleet: %s × %d-entry appends, %.0f B per entry as sent, %s per loop",
		plural(N, "build"), K, pool.entryBytes, cfg.FleetDuration)
	c := newClient(r.srv.URL, r.srv.Key, N+4)
	defer c.close()

	var bl, rd []*loopStats
	for round := range cfg.Runs {
		// Alternate which goes first, so neither always runs on the
		// machine the other has just warmed (or loaded).
		first := round%2 == 1 && rs != nil
		for turn := range 2 {
			if (turn == 0) == first {
				if rs == nil {
					continue
				}
				s, err := fleetRedis(ctx, rs, pool, N, cfg.FleetDuration, round)
				if err != nil {
					return fmt.Errorf("redis round %d: %w", round+1, err)
				}
				rd = append(rd, s)
				r.progress("fleet round %d, redis:    %s", round+1, s)
				if err := rs.flush(); err != nil {
					return fmt.Errorf("redis FLUSHALL: %w", err)
				}
			} else {
				s, err := r.fleetBuildlog(ctx, c, pool, N, cfg.FleetDuration)
				if err != nil {
					return err
				}
				bl = append(bl, s)
				r.progress("fleet round %d, buildlog: %s", round+1, s)
			}
		}
	}
	r.fleetFigures(bl, rd, rs, why)
	for _, s := range bl {
		if s.appends.Load() == 0 {
			return fmt.Errorf("no append succeeded in a round: %v", s.firstErr)
		}
	}
	return nil
}

func (r *runner) fleetFigures(bl, rd []*loopStats, rs *redisServer, why string) {
	cfg := r.cfg
	N, K := cfg.FleetBuilds, cfg.FleetBatch
	col := func(ss []*loopStats, f func(*loopStats) (float64, bool)) []float64 {
		var xs []float64
		for _, s := range ss {
			if v, ok := f(s); ok {
				xs = append(xs, v)
			}
		}
		return xs
	}
	rate := func(s *loopStats) (float64, bool) { return float64(s.appends.Load()) / s.elapsed.Seconds(), true }
	entries := func(s *loopStats) (float64, bool) {
		return float64(s.appends.Load()) * float64(K) / s.elapsed.Seconds(), true
	}
	q := func(x float64) func(*loopStats) (float64, bool) {
		return func(s *loopStats) (float64, bool) { return s.lat.quantile(x).Seconds(), s.lat.count() > 0 }
	}
	srvCPU := func(s *loopStats) (float64, bool) {
		return s.serverCPU.Seconds() / float64(s.appends.Load()), s.serverOK && s.appends.Load() > 0
	}
	benchCPU := func(s *loopStats) (float64, bool) {
		return s.clientCPU.Seconds() / float64(s.appends.Load()), s.clientOK && s.appends.Load() > 0
	}
	failed := func(s *loopStats) (float64, bool) { return float64(s.failed.Load()), true }

	shape := fmt.Sprintf("(%s × %d)", plural(N, "build"), K)
	redisName := "(Redis durable)"
	fig := func(name string, u unit, f func(*loopStats) (float64, bool)) figure {
		g := figure{scenario: "fleet", name: name, unit: u, vals: col(bl, f)}
		if len(rd) > 0 {
			g.base, g.baseName = col(rd, f), redisName
		}
		return g
	}
	appends := fig("appends/s "+shape, perSecond, rate)
	p50 := fig("append p50", latency, q(0.50))
	p99 := fig("append p99", latency, q(0.99))
	// The targets of docs/PERFORMANCE.md, judged where this run has their
	// shape, on a server the bench started (a --url server's store is not
	// known here).
	if cfg.URL == "" {
		pg := r.pgDSN != ""
		vsRedis := func(x float64) {
			appends.target = fmt.Sprintf("≥ %.1f× Redis", x)
			if len(rd) > 0 {
				appends.check = atLeastBase(x)
			} else {
				appends.target += " (no Redis in this run)"
			}
		}
		switch {
		case !pg && N == 256 && K == 10:
			vsRedis(1.0)
			p99.target, p99.check = "≤ 25 ms", atMost(0.025)
		case !pg && N == 16 && K == 10:
			vsRedis(1.0)
		case !pg && N == 1 && K == 1:
			p50.target, p50.check = "≤ 0.5 ms", atMost(0.0005)
		case pg && N == 256 && K == 10:
			vsRedis(0.5)
			p99.target, p99.check = "≤ 50 ms", atMost(0.050)
		}
	}
	r.figs = append(r.figs, appends, fig("entries/s", perSecond, entries), p50, p99)
	if g := fig("server CPU per append", cpuTime, srvCPU); len(g.vals) > 0 {
		if r.pgDSN != "" {
			g.name += " (buildlog only)"
		}
		r.figs = append(r.figs, g)
	}
	if g := fig("bench CPU per append (the load)", cpuTime, benchCPU); len(g.vals) > 0 {
		r.figs = append(r.figs, g)
	}
	r.figs = append(r.figs, fig("failed appends (retried)", count, failed))
	if rs == nil {
		r.figs = append(r.figs, figure{scenario: "fleet", name: "Redis comparison", text: "skipped: " + why})
		return
	}
	var per []string
	for i := range min(len(bl), len(rd)) {
		a, _ := rate(bl[i])
		b, _ := rate(rd[i])
		per = append(per, fmt.Sprintf("%.2f×", a/b))
	}
	r.figs = append(r.figs, figure{scenario: "fleet", name: "buildlog/Redis appends/s by round", text: strings.Join(per, ", ") +
		fmt.Sprintf(" (redis-server %s, appendonly yes, appendfsync always, no snapshots; each client pipelines its %s as XADDs to a stream of its own)", rs.Version, plural(K, "entry"))})
	for _, ss := range [][]*loopStats{bl, rd} {
		for _, s := range ss {
			if s.firstErr != nil {
				r.figs = append(r.figs, figure{scenario: "fleet", name: "first failed append (" + s.who + ")", text: s.firstErr.Error()})
				break
			}
		}
	}
}

// fleetPool is what the producers send: arrays of K typical entries,
// shared by every producer (each starts at a place of its own), and the
// same entries as the fields of Redis XADDs.
type fleetPool struct {
	arrays     [][]byte   // `[e1,...,eK]`
	fields     [][][]byte // per array, per entry: the RESP bulk strings `entry` and the entry's JSON
	entryBytes float64
}

func newFleetPool(k int) *fleetPool {
	// Bounded to ~256k entries in all, whatever K is.
	v := max(1, min(64, (1<<18)/k))
	p := &fleetPool{}
	g := newGen(21)
	var total int
	for range v {
		arr := []byte{'['}
		var fs [][]byte
		for i := range k {
			e := g.entry(nil)
			if i > 0 {
				arr = append(arr, ',')
			}
			arr = append(arr, e...)
			fs = append(fs, appendBulk(appendBulk(nil, []byte("entry")), e))
			total += len(e) + 1
		}
		p.arrays = append(p.arrays, append(arr, ']'))
		p.fields = append(p.fields, fs)
	}
	p.entryBytes = float64(total) / float64(v*k)
	return p
}

// loopStats is one closed loop's result.
type loopStats struct {
	who             string
	appends, failed atomic.Int64
	lat             hist
	elapsed         time.Duration

	errMu    sync.Mutex
	firstErr error

	serverCPU, clientCPU time.Duration
	serverOK, clientOK   bool
}

func (s *loopStats) fail(err error) {
	s.failed.Add(1)
	s.errMu.Lock()
	if s.firstErr == nil {
		s.firstErr = err
	}
	s.errMu.Unlock()
}

func (s *loopStats) String() string {
	return fmt.Sprintf("%.0f appends/s, p50 %v, p99 %v, %d failed", float64(s.appends.Load())/s.elapsed.Seconds(),
		s.lat.quantile(0.5).Round(time.Microsecond), s.lat.quantile(0.99).Round(time.Microsecond), s.failed.Load())
}

// closedLoop warms up every producer with one step, then runs them all,
// each calling step back to back, for d. step(p) is producer p's next
// append; after a failure the producer pauses briefly and calls step
// again, which retries the same batch, as a real producer would. Only
// successful appends are timed. server measures the server's CPU over the
// loop; the bench's own is measured when server is another process.
func closedLoop(ctx context.Context, who string, n int, d time.Duration, server func() cpuMeter, step func(ctx context.Context, p int) error) (*loopStats, error) {
	s := &loopStats{who: who}
	warm := make(chan error, n)
	var wg sync.WaitGroup
	for p := range n {
		wg.Go(func() { warm <- step(ctx, p) })
	}
	wg.Wait()
	close(warm)
	for err := range warm {
		if err != nil {
			return nil, fmt.Errorf("%s warm-up append: %w", who, err)
		}
	}
	sm := server()
	self := cpuMeter{}
	if sm.ok && sm.pid != os.Getpid() {
		self = processMeter(os.Getpid())
	}
	start := time.Now()
	deadline := start.Add(d)
	for p := range n {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				t := time.Now()
				if err := step(ctx, p); err != nil {
					if ctx.Err() != nil {
						return
					}
					s.fail(err)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				s.lat.record(time.Since(t))
				s.appends.Add(1)
			}
		})
	}
	wg.Wait()
	s.elapsed = time.Since(start)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.serverCPU, s.serverOK = sm.used()
	s.clientCPU, s.clientOK = self.used()
	return s, nil
}

// fleetBuildlog is one round against the server: N fresh builds, the
// loop, then the builds finished.
func (r *runner) fleetBuildlog(ctx context.Context, c *client, pool *fleetPool, n int, d time.Duration) (*loopStats, error) {
	type producer struct {
		id   string
		h    *rawHTTP
		next uint64
		j    int
	}
	ps := make([]producer, n)
	defer func() {
		for _, p := range ps {
			if p.h != nil {
				p.h.close()
			}
		}
	}()
	for p := range ps {
		h, err := newRawHTTP(r.srv.URL)
		if err != nil {
			return nil, err
		}
		ps[p].h = h
	}
	if err := parallel(ctx, n, 16, func(p int) error {
		id, err := c.createBuild(ctx)
		ps[p].id = id
		return err
	}); err != nil {
		return nil, fmt.Errorf("creating the fleet's builds: %w", err)
	}
	step := func(ctx context.Context, p int) error {
		pr := &ps[p]
		arr := pool.arrays[(p+pr.j)%len(pool.arrays)]
		body := make([]byte, 0, len(arr)+48)
		body = append(body, `{"first_offset":`...)
		body = strconv.AppendUint(body, pr.next, 10)
		body = append(body, `,"entries":`...)
		body = append(append(body, arr...), '}')
		rep, err := appendRaw(pr.h, r.srv.Key, pr.id, body)
		if err != nil {
			// A 409 says where the build is: resynchronise, as a producer
			// that lost a reply would.
			var se *statusError
			if errors.As(err, &se) {
				if next, ok := se.nextOffset(); ok {
					pr.next = next
				}
			}
			return err
		}
		if rep.FirstOffset != pr.next {
			err := fmt.Errorf("stored at offset %d, sent with first_offset %d", rep.FirstOffset, pr.next)
			pr.next = rep.NextOffset
			return err
		}
		pr.next, pr.j = rep.NextOffset, pr.j+1
		return nil
	}
	s, err := closedLoop(ctx, "buildlog", n, d, r.srv.meter, step)
	if err != nil {
		return nil, err
	}
	// Finished, so a server at --url does not keep them open until its
	// idle timeout.
	if err := parallel(ctx, n, 16, func(p int) error { return c.finish(ctx, ps[p].id) }); err != nil {
		return nil, fmt.Errorf("finishing the fleet's builds: %w", err)
	}
	return s, nil
}

// fleetRedis is one round against Redis: N connections, each client
// XADDing its K entries, pipelined, to a stream of its own.
func fleetRedis(ctx context.Context, rs *redisServer, pool *fleetPool, n int, d time.Duration, round int) (*loopStats, error) {
	type producer struct {
		c    *respConn
		head []byte // the XADD command up to its fields
		buf  []byte
		j    int
	}
	ps := make([]producer, n)
	defer func() {
		for _, p := range ps {
			if p.c != nil {
				p.c.close()
			}
		}
	}()
	for p := range ps {
		c, err := dialRedis(rs.Addr)
		if err != nil {
			return nil, err
		}
		key := fmt.Sprintf("bench:%d:%d", round, p)
		ps[p].c = c
		ps[p].head = appendBulk(appendBulk(appendBulk([]byte("*5\r\n"), []byte("XADD")), []byte(key)), []byte("*"))
	}
	step := func(ctx context.Context, p int) error {
		pr := &ps[p]
		fields := pool.fields[(p+pr.j)%len(pool.fields)]
		pr.buf = pr.buf[:0]
		for _, f := range fields {
			pr.buf = append(append(pr.buf, pr.head...), f...)
		}
		pr.c.nc.SetDeadline(time.Now().Add(30 * time.Second))
		if err := pr.c.send(pr.buf, len(fields)); err != nil {
			var re redisError
			if !errors.As(err, &re) {
				// The connection's state is unknown: start afresh.
				pr.c.close()
				if c, derr := dialRedis(rs.Addr); derr == nil {
					pr.c = c
				}
			}
			return err
		}
		pr.j++
		return nil
	}
	return closedLoop(ctx, "redis", n, d, rs.meter, step)
}

// parallel runs f(0..n-1) on at most width goroutines, returning the first
// error.
func parallel(ctx context.Context, n, width int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		errMu sync.Mutex
		first error
	)
	for range min(n, width) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(i); err != nil {
					errMu.Lock()
					if first == nil {
						first = err
					}
					errMu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// processMeter starts measuring the CPU of process pid.
func processMeter(pid int) cpuMeter {
	c, err := cpuOf(pid)
	return cpuMeter{pid: pid, start: c, ok: err == nil}
}

// used is the CPU time the process has used since the meter started.
func (m cpuMeter) used() (time.Duration, bool) {
	if !m.ok {
		return 0, false
	}
	c, err := cpuOf(m.pid)
	if err != nil {
		return 0, false
	}
	return c - m.start, true
}

// plural is "1 build", "2 builds", "1 entry", "10 entries".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	if w, ok := strings.CutSuffix(word, "y"); ok {
		return strconv.Itoa(n) + " " + w + "ies"
	}
	return strconv.Itoa(n) + " " + word + "s"
}
