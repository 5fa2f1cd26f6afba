package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// bodiesPerProducer bounds the memory the prepared batch bodies take: each
// producer cycles through this many.
const bodiesPerProducer = 8

// ingest: P producers, one build each, append B batches of N entries as
// fast as acks come back; baseline: the same bytes appended to one file
// with an fdatasync per batch.
func (r *runner) ingest(ctx context.Context) error {
	cfg := r.cfg
	P, B, N := cfg.IngestProducers, cfg.IngestBatches, cfg.IngestBatchSize
	bodies := make([][][]byte, P)
	var bodyBytes int64
	for p := range bodies {
		g := newGen(uint64(p + 1))
		for range min(B, bodiesPerProducer) {
			bodies[p] = append(bodies[p], g.batch(N, -1))
		}
		for b := range B {
			bodyBytes += int64(len(bodies[p][b%len(bodies[p])]))
		}
	}
	total := float64(P * B * N)
	r.progress("ingest: %d producers × %d batches × %d entries, %.0f B per entry as sent", P, B, N, float64(bodyBytes)/total)

	rates, mbs, baseRates, baseMBs, perCPU := []float64{}, []float64{}, []float64{}, []float64{}, []float64{}
	for run := range cfg.Runs {
		d, err := fileBaseline(filepath.Join(r.tmp, fmt.Sprintf("ingest-baseline-%d", run)), bodies, B)
		if err != nil {
			return err
		}
		baseRates, baseMBs = append(baseRates, total/d.Seconds()), append(baseMBs, float64(bodyBytes)/d.Seconds())

		ids := make([]string, P)
		for p := range ids {
			if ids[p], err = r.c.createBuild(ctx); err != nil {
				return err
			}
		}
		cpu := r.srv.meter()
		start := time.Now()
		errs := make(chan error, P)
		var wg sync.WaitGroup
		for p := range P {
			wg.Go(func() {
				for b := range B {
					if _, err := r.c.append(ctx, ids[p], bodies[p][b%len(bodies[p])]); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		d = time.Since(start)
		close(errs)
		if err := <-errs; err != nil {
			return err
		}
		rates, mbs = append(rates, total/d.Seconds()), append(mbs, float64(bodyBytes)/d.Seconds())
		if v, ok := cpu.per(total); ok {
			perCPU = append(perCPU, v)
		}
		r.progress("ingest run %d: %.0f entries/s (baseline %.0f)", run+1, rates[run], baseRates[run])
	}
	r.figs = append(r.figs,
		figure{scenario: "ingest", name: "entries/s", unit: perSecond, vals: rates, base: baseRates,
			baseName: "(file+fdatasync)", target: "≥ 0.4× baseline", check: atLeastBase(0.4)},
		figure{scenario: "ingest", name: "MB/s (as sent)", unit: mbPerSecond, vals: mbs, base: baseMBs, baseName: "(file+fdatasync)"},
	)
	if len(perCPU) > 0 {
		r.figs = append(r.figs, figure{scenario: "ingest", name: "entries per server CPU-second", unit: perCPUSecond, vals: perCPU})
	}
	if r.pgDSN != "" {
		r.figs = append(r.figs, figure{scenario: "ingest", name: "entries/s, PostgreSQL", unit: perSecond, vals: rates,
			target: "≥ 400k/s", check: atLeast(400_000)})
	}
	return nil
}

// fileBaseline appends every producer's batches, interleaved as they would
// arrive, to one file, with an fdatasync after each: the durable-write
// limit of this disk for this many bytes.
func fileBaseline(path string, bodies [][][]byte, batches int) (time.Duration, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	defer f.Close()
	start := time.Now()
	for b := range batches {
		for p := range bodies {
			if _, err := f.Write(bodies[p][b%len(bodies[p])]); err != nil {
				return 0, err
			}
			if err := fdatasync(f); err != nil {
				return 0, err
			}
		}
	}
	return time.Since(start), nil
}

// single: one producer appends one entry per request, each waiting for
// its durable ack; baseline: one fdatasync of a write of the same size.
func (r *runner) single(ctx context.Context) error {
	M := r.cfg.SingleRequests
	g := newGen(99)
	bodies := make([][]byte, 64)
	for i := range bodies {
		bodies[i] = g.batch(1, -1)
	}
	var p50, p99, b50, b99 []float64
	for run := range r.cfg.Runs {
		base, err := syncBaseline(filepath.Join(r.tmp, fmt.Sprintf("single-baseline-%d", run)), bodies, M)
		if err != nil {
			return err
		}
		b50, b99 = append(b50, sortedQuantile(base, 0.50).Seconds()), append(b99, sortedQuantile(base, 0.99).Seconds())

		id, err := r.c.createBuild(ctx)
		if err != nil {
			return err
		}
		// Warm the connection and the build's pages.
		for i := range 20 {
			if _, err := r.c.append(ctx, id, bodies[i%len(bodies)]); err != nil {
				return err
			}
		}
		lat := make([]time.Duration, M)
		for i := range M {
			start := time.Now()
			if _, err := r.c.append(ctx, id, bodies[i%len(bodies)]); err != nil {
				return err
			}
			lat[i] = time.Since(start)
		}
		p50, p99 = append(p50, sortedQuantile(lat, 0.50).Seconds()), append(p99, sortedQuantile(lat, 0.99).Seconds())
		r.progress("single run %d: p50 %v p99 %v (fdatasync p50 %v)", run+1,
			sortedQuantile(lat, 0.5), sortedQuantile(lat, 0.99), sortedQuantile(base, 0.5))
	}
	r.figs = append(r.figs,
		figure{scenario: "single append", name: "latency p50", unit: latency, vals: p50, base: b50,
			baseName: "(fdatasync)", target: "≤ 1 ms", check: atMost(0.001)},
		figure{scenario: "single append", name: "latency p99", unit: latency, vals: p99, base: b99, baseName: "(fdatasync)"},
	)
	return nil
}

// syncBaseline times n appends of one small body each followed by fdatasync.
func syncBaseline(path string, bodies [][]byte, n int) ([]time.Duration, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer os.Remove(path)
	defer f.Close()
	lat := make([]time.Duration, n)
	for i := range n {
		start := time.Now()
		if _, err := f.Write(bodies[i%len(bodies)]); err != nil {
			return nil, err
		}
		if err := fdatasync(f); err != nil {
			return nil, err
		}
		lat[i] = time.Since(start)
	}
	return lat, nil
}
