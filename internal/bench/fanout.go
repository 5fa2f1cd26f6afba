package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync/atomic"
	"time"
)

// fanout: F followers of one build (dialect A, follow=true) while a
// producer appends FanoutRate entries/s for FanoutDuration. Each entry
// carries its send time, so every follower measures append→delivery on
// every entry. The server's memory is read before the followers connect
// and while they are connected.
func (r *runner) fanout(ctx context.Context) error {
	cfg := r.cfg
	F := cfg.FanoutFollowers
	// Served from this process, each follower costs it two sockets.
	if err := r.checkFiles(F, F, F); err != nil {
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
	defer revokeFollowerKeys(ctx, c, keys)

	time.Sleep(500 * time.Millisecond) // let the server's heap settle
	rss0, rssErr := rss()
	inProcess := srv.PID == os.Getpid()
	var ms0 runtime.MemStats
	if inProcess {
		runtime.GC()
		runtime.ReadMemStats(&ms0)
	}

	var (
		entries  atomic.Int64 // entries delivered, over all followers
		complete atomic.Int64 // followers that got every entry and the end
	)
	url := srv.URL + "/v1/templates/builds/" + id + "/logs?follow=true"
	connectStart := time.Now()
	cr, err := follow(ctx, F, func(int) string { return url }, keys, func(_ int, n int64, err error) {
		entries.Add(n)
		if err == nil {
			complete.Add(1)
		}
	})
	if err != nil {
		return err
	}
	defer cr.stop()
	connectTime := time.Since(connectStart)
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
	cr.wait(60 * time.Second)
	serverCPU, serverOK := cpu.used()
	benchCPU, benchOK := self.used()
	want := int64(F) * int64(sent+1)
	r.progress("fanout: %d entries sent; %d of %d deliveries; %d of %d followers complete",
		sent, entries.Load(), want, complete.Load(), F)

	label := fmt.Sprintf("(F=%d, %d entries/s)", F, cfg.FanoutRate)
	p99 := figure{scenario: "fan-out", name: "delivery p99 " + label, unit: latency, vals: []float64{cr.lat.quantile(0.99).Seconds()},
		target: "≤ 100 ms at 10,000 followers (not judged below)"}
	if F >= 10000 {
		p99.target, p99.check = "≤ 100 ms at 10,000 followers", atMost(0.100)
	}
	r.figs = append(r.figs,
		figure{scenario: "fan-out", name: "delivery p50 " + label, unit: latency, vals: []float64{cr.lat.quantile(0.50).Seconds()}},
		p99,
		figure{scenario: "fan-out", name: "delivery max " + label, unit: latency, vals: []float64{cr.lat.maxDuration().Seconds()}},
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
	failed, first := cr.fails.get()
	if got := entries.Load(); got != want || failed > 0 {
		return fmt.Errorf("%d of %d deliveries, %d of %d followers complete, %d failed (first: %v)",
			got, want, complete.Load(), F, failed, first)
	}
	r.figs = append(r.figs, figure{scenario: "fan-out", name: "deliveries", text: fmt.Sprintf(
		"all %s (%d followers × %d entries), in order, no gaps", thousands(want), F, sent+1)})
	return nil
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
