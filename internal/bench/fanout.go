package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// followersPerKey spreads followers over read keys when the bench targets
// a server it did not start, whose --max-streams-per-key it cannot set.
const followersPerKey = 500

// fanout: F followers of one build (dialect A, follow=true) while a
// producer appends FanoutRate entries/s for FanoutDuration. Each entry
// carries its send time, so every follower measures append→delivery on
// every entry. The server's memory is read before the followers connect
// and while they are connected.
func (r *runner) fanout(ctx context.Context) error {
	cfg := r.cfg
	F := cfg.FanoutFollowers
	// Served from this process, each follower costs it two sockets.
	need := F
	if cfg.URL == "" && len(cfg.ServeCommand) == 0 {
		need = 2 * F
	}
	if err := checkFiles(F, need); err != nil {
		return err
	}
	srv := r.srv
	where := "in-process server: RSS includes the bench's own followers"
	switch {
	case cfg.URL != "":
		where = "server at --url: RSS from its /metrics"
	case len(cfg.ServeCommand) > 0:
		var err error
		srv, err = startChild(ctx, cfg.ServeCommand, r.pgDSN, filepath.Join(r.tmp, "fanout-data"), F+100, nil)
		if err != nil {
			return err
		}
		defer srv.Close()
		where = "`buildlog serve` child process"
	default:
		srv = &server{URL: r.srv.URL, Key: r.srv.Key, PID: os.Getpid()}
	}
	rss := func() (int64, error) {
		if srv.PID > 0 {
			return rssOf(srv.PID)
		}
		return metricsRSS(ctx, srv.URL)
	}
	c := newClient(srv.URL, srv.Key, 4)
	defer c.close()
	id, err := c.createBuild(ctx)
	if err != nil {
		return err
	}
	keys, err := r.followerKeys(ctx, c, srv, F)
	if err != nil {
		return err
	}
	defer func() {
		for _, k := range keys {
			if k.id != "" {
				c.deleteKey(context.WithoutCancel(ctx), k.id)
			}
		}
	}()

	time.Sleep(500 * time.Millisecond) // let the server's heap settle
	rss0, rssErr := rss()
	inProcess := srv.PID == os.Getpid()
	var ms0 runtime.MemStats
	if inProcess {
		runtime.GC()
		runtime.ReadMemStats(&ms0)
	}

	// Connect the followers, a few at a time (a burst of thousands of
	// dials overflows the listen backlog and measures SYN retries).
	hc, closeIdle := followerClient()
	defer closeIdle()
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		lat       hist
		connected sync.WaitGroup
		ended     sync.WaitGroup
		entries   atomic.Int64 // entries delivered, over all followers
		complete  atomic.Int64 // followers that got every entry and the end
		fails     failures
	)
	fail := fails.add
	url := srv.URL + "/v1/templates/builds/" + id + "/logs?follow=true"
	gate := make(chan struct{}, 32)
	connectStart := time.Now()
	connected.Add(F)
	ended.Add(F)
	for i := range F {
		gate <- struct{}{}
		go func() {
			defer ended.Done()
			f := follower{hc: hc, url: url, key: keys[i/followersPerKey%len(keys)].secret, lat: &lat}
			body, err := f.connect(fctx)
			<-gate
			if err != nil {
				fail(err)
				connected.Done()
				return
			}
			connected.Done()
			defer body.Close()
			n, err := f.read(body)
			entries.Add(n)
			if err != nil {
				if fctx.Err() == nil {
					fail(err)
				}
				return
			}
			complete.Add(1)
		}()
	}
	// However this returns, no follower outlives it.
	defer func() { cancel(); ended.Wait() }()
	connected.Wait()
	connectTime := time.Since(connectStart)
	if n, first := fails.get(); n > 0 {
		return fmt.Errorf("%d of %d followers failed to connect: %v", n, F, first)
	}
	r.progress("fanout: %d followers connected in %.1fs", F, connectTime.Seconds())
	time.Sleep(500 * time.Millisecond)
	rssConnected, _ := rss()
	rssPeak := rssConnected
	if inProcess {
		// Where a follower's memory goes, server and client together
		// (both live in this process): goroutine stacks and heap.
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		if cfg.HeapProfile != "" {
			if err := writeHeapProfile(cfg.HeapProfile); err != nil {
				return err
			}
		}
		r.figs = append(r.figs, figure{scenario: "fan-out", name: "in-process memory per follower (server + client)",
			text: fmt.Sprintf("stacks %s, heap %s", bytesPer.format(float64(int64(ms.StackInuse)-int64(ms0.StackInuse))/float64(F)),
				bytesPer.format(float64(int64(ms.HeapInuse)-int64(ms0.HeapInuse))/float64(F)))})
	}

	// The producer: FanoutBatch entries every FanoutBatch/FanoutRate
	// seconds, each stamped with the time it is sent.
	var appendLat hist
	every := time.Duration(float64(time.Second) * float64(cfg.FanoutBatch) / float64(cfg.FanoutRate))
	tick := time.NewTicker(every)
	sample := time.NewTicker(time.Second)
	deadline := time.After(cfg.FanoutDuration)
	g := newGen(11)
	sent := 0
	// The server's own CPU from the first append until every follower has
	// the end, per entry delivered: the figure that does not depend on
	// the machine's load (as farm's). The bench's own beside it says
	// whether the load generator is the bottleneck.
	cpu := srv.meter()
	self := cpuMeter{}
	if cpu.ok {
		self = processMeter(os.Getpid())
	}
produce:
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			break produce
		case <-sample.C:
			if v, err := rss(); err == nil {
				rssPeak = max(rssPeak, v)
			}
		case <-tick.C:
			now := time.Now()
			if _, err := c.append(ctx, id, g.liveBatch(cfg.FanoutBatch, now)); err != nil {
				return fmt.Errorf("fan-out producer: %w", err)
			}
			appendLat.record(time.Since(now))
			sent += cfg.FanoutBatch
		}
	}
	tick.Stop()
	sample.Stop()
	if v, err := rss(); err == nil {
		rssPeak = max(rssPeak, v)
	}
	if err := c.finish(ctx, id); err != nil {
		return err
	}
	// Every follower's stream ends after the terminal entry.
	done := make(chan struct{})
	go func() { ended.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cancel()
		<-done
	}
	serverCPU, serverOK := cpu.used()
	benchCPU, benchOK := self.used()
	want := int64(F) * int64(sent+1)
	r.progress("fanout: %d entries sent; %d of %d deliveries; %d of %d followers complete",
		sent, entries.Load(), want, complete.Load(), F)

	label := fmt.Sprintf("(F=%d, %d entries/s)", F, cfg.FanoutRate)
	p99 := figure{scenario: "fan-out", name: "delivery p99 " + label, unit: latency, vals: []float64{lat.quantile(0.99).Seconds()},
		target: "≤ 100 ms at 10,000 followers (not judged below)"}
	if F >= 10000 {
		p99.target, p99.check = "≤ 100 ms at 10,000 followers", atMost(0.100)
	}
	r.figs = append(r.figs,
		figure{scenario: "fan-out", name: "delivery p50 " + label, unit: latency, vals: []float64{lat.quantile(0.50).Seconds()}},
		p99,
		figure{scenario: "fan-out", name: "delivery max " + label, unit: latency, vals: []float64{lat.maxDuration().Seconds()}},
		figure{scenario: "fan-out", name: "producer rate achieved", unit: perSecond,
			vals: []float64{float64(sent) / cfg.FanoutDuration.Seconds()}},
		figure{scenario: "fan-out", name: "append p99 while fanning out", unit: latency, vals: []float64{appendLat.quantile(0.99).Seconds()}},
		figure{scenario: "fan-out", name: "connect all followers", unit: latency, vals: []float64{connectTime.Seconds()}},
	)
	if got := entries.Load(); serverOK && got > 0 {
		name := "server CPU per delivered event"
		if r.pgDSN != "" {
			name += " (buildlog only)"
		}
		r.figs = append(r.figs, figure{scenario: "fan-out", name: name, unit: cpuTime, vals: []float64{serverCPU.Seconds() / float64(got)}})
		if benchOK {
			r.figs = append(r.figs, figure{scenario: "fan-out", name: "bench CPU per delivered event (the load)", unit: cpuTime,
				vals: []float64{benchCPU.Seconds() / float64(got)}})
		}
	} else {
		r.figs = append(r.figs, figure{scenario: "fan-out", name: "server CPU per delivered event",
			text: "n/a: the server is not a child process of the bench"})
	}
	if rssErr != nil {
		r.figs = append(r.figs, figure{scenario: "fan-out", name: "server RSS per follower", text: "n/a: " + rssErr.Error()})
	} else {
		r.figs = append(r.figs,
			figure{scenario: "fan-out", name: "RSS growth per follower, idle", unit: bytesPer,
				vals: []float64{float64(rssConnected-rss0) / float64(F)}},
			figure{scenario: "fan-out", name: "RSS growth per follower, peak", unit: bytesPer,
				vals: []float64{float64(rssPeak-rss0) / float64(F)}, target: "≤ 20 KiB", check: atMost(20 << 10)},
			figure{scenario: "fan-out", name: "server RSS before → peak", text: fmt.Sprintf("%s → %s (%s)",
				bytesPer.format(float64(rss0)), bytesPer.format(float64(rssPeak)), where)},
		)
	}
	failed, first := fails.get()
	if got := entries.Load(); got != want || failed > 0 {
		return fmt.Errorf("%d of %d deliveries, %d of %d followers complete, %d failed (first: %v)",
			got, want, complete.Load(), F, failed, first)
	}
	r.figs = append(r.figs, figure{scenario: "fan-out", name: "deliveries", text: fmt.Sprintf(
		"all %s (%d followers × %d entries), in order, no gaps", thousands(want), F, sent+1)})
	return nil
}

// followerClient is the HTTP client of many followers: a connection each,
// never pooled, with small buffers, so the bench's own memory stays small
// beside the server's.
func followerClient() (*http.Client, func()) {
	tr := &http.Transport{
		DialContext:        (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
		DisableKeepAlives:  true,
		DisableCompression: true,
		ReadBufferSize:     4 << 10,
		WriteBufferSize:    1 << 10,
	}
	return &http.Client{Transport: tr}, tr.CloseIdleConnections
}

// failures counts followers' errors and keeps the first.
type failures struct {
	mu    sync.Mutex
	n     int
	first error
}

func (f *failures) add(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		f.first = err
	}
	f.n++
}

func (f *failures) get() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n, f.first
}

type followerKey struct{ id, secret string }

// followerKeys returns the keys followers use: the server's own key when
// the bench set its stream limit, else one read key per followersPerKey
// followers (made with the admin key, revoked after), so a server's
// default --max-streams-per-key does not refuse them.
func (r *runner) followerKeys(ctx context.Context, c *client, srv *server, F int) ([]followerKey, error) {
	if r.cfg.URL == "" {
		return []followerKey{{secret: srv.Key}}, nil
	}
	var keys []followerKey
	for i := 0; i < F; i += followersPerKey {
		id, secret, err := c.createKey(ctx, fmt.Sprintf("bench-follower-%d", i/followersPerKey))
		if err != nil {
			if i == 0 {
				r.progress("fanout: cannot make read keys (%v); all followers use --key", err)
				return []followerKey{{secret: srv.Key}}, nil
			}
			return keys, err
		}
		keys = append(keys, followerKey{id, secret})
	}
	return keys, nil
}

// checkFiles fails early, with a clear message, when this process may not
// open a socket per follower.
func checkFiles(F, sockets int) error {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		return nil
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil
	}
	if need := uint64(sockets) + 200; lim.Cur < need {
		return fmt.Errorf("--followers %d needs %d open files here; the limit is %d (raise it with ulimit -n, or serve from a child process)", F, need, lim.Cur)
	}
	return nil
}

// follower is one reader of a live build.
type follower struct {
	hc  *http.Client
	url string
	key string
	lat *hist
}

func (f *follower) connect(ctx context.Context) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", f.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+f.key)
	resp, err := f.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		return nil, fmt.Errorf("follow: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return resp.Body, nil
}

var (
	idPrefix   = []byte("id: ")
	dataPrefix = []byte("data: ")
	markBytes  = []byte(sentMark)
)

// read consumes the stream to its end, checking ids are 0, 1, 2, … and
// recording each stamped entry's delay. It reads lines with a small
// buffer rather than the full SSE parser: ten thousand followers share
// two cores with the server being measured.
func (f *follower) read(body io.Reader) (int64, error) {
	br := bufio.NewReaderSize(body, 4<<10)
	var n int64
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
		switch {
		case bytes.HasPrefix(line, idPrefix):
			id, perr := strconv.ParseInt(string(bytes.TrimSpace(line[len(idPrefix):])), 10, 64)
			if perr != nil || id != n {
				return n, fmt.Errorf("follower got id %q, want %d", bytes.TrimSpace(line), n)
			}
			n++
		case bytes.HasPrefix(line, dataPrefix):
			now := time.Now()
			if i := bytes.Index(line, markBytes); i >= 0 {
				rest := line[i+len(markBytes):]
				j := bytes.IndexByte(rest, ' ')
				if j < 0 {
					break
				}
				if ns, err := strconv.ParseInt(string(rest[:j]), 10, 64); err == nil {
					f.lat.record(now.Sub(time.Unix(0, ns)))
				}
			}
		}
	}
}

// writeHeapProfile saves the heap with every follower connected.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
