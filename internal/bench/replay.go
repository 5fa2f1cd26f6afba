package bench

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"buildlog/internal/sqlite"
	"buildlog/internal/sse"

	"github.com/jackc/pgx/v5"
)

// prepBatch is the entries per append when filling the replayed build: the
// server's default batch limit, so filling 1,000,000 entries takes 100
// requests.
const prepBatch = 10000

// finishedBuild makes (once) the finished build replay and polling read:
// ReplayEntries entries and the terminal entry.
func (r *runner) finishedBuild(ctx context.Context) (string, error) {
	if r.replayID != "" {
		return r.replayID, nil
	}
	n := r.cfg.ReplayEntries
	start := time.Now()
	id, err := r.c.createBuild(ctx)
	if err != nil {
		return "", err
	}
	g := newGen(7)
	// Four distinct full batches, cycled, keep the generator's cost and
	// memory small whatever the size.
	var full [][]byte
	for i := 0; i < n; i += prepBatch {
		var body []byte
		if k := min(prepBatch, n-i); k < prepBatch {
			body = g.batch(k, -1)
		} else {
			j := (i / prepBatch) % 4
			if j == len(full) {
				full = append(full, g.batch(prepBatch, -1))
			}
			body = full[j]
		}
		if _, err := r.c.append(ctx, id, body); err != nil {
			return "", err
		}
	}
	if err := r.c.finish(ctx, id); err != nil {
		return "", err
	}
	if err := r.awaitCompacted(ctx, id); err != nil {
		return "", err
	}
	r.replayID = id
	r.progress("replay: filled build %s with %d entries in %.1fs", id, n, time.Since(start).Seconds())
	return id, nil
}

// awaitCompacted waits, when the bench owns the store, until the compactor
// has rewritten build id: replay and polling then read a finished build as
// its readers do, from compressed segments, and not beside the compactor's
// own work (compressing a million entries takes seconds of CPU). A store
// without compaction (a --serve-bin from before it) is not waited for.
func (r *runner) awaitCompacted(ctx context.Context, id string) error {
	var db storageDB
	switch {
	case r.cfg.URL != "":
		return nil
	case r.pgDSN != "":
		conn, err := pgx.Connect(ctx, r.pgDSN)
		if err != nil {
			return err
		}
		db = pgDB{conn}
	default:
		sdb, err := sql.Open("sqlite", "file:"+filepath.Join(r.tmp, "data", sqlite.FileName)+"?mode=ro&_pragma=busy_timeout(10000)")
		if err != nil {
			return err
		}
		db = sqliteDB{sdb}
	}
	defer db.close()
	start := time.Now()
	for deadline := start.Add(10 * time.Minute); ; {
		n, err := db.compacted(ctx, []string{id})
		if err != nil {
			r.progress("replay: not waiting for compaction (%v)", err)
			return nil
		}
		if n == 1 {
			r.progress("replay: build compacted %.1fs after its finish", time.Since(start).Seconds())
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replay: build not compacted 10 minutes after its finish")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// countWriter counts the SSE events of entries in what is written to it,
// by their "event: log" lines, without parsing, so that the reader costs
// the same whichever server it reads.
type countWriter struct {
	n     int64
	bytes int64
	tail  []byte // the last len(eventLine)-1 bytes of the stream, for a match across writes
}

var eventLine = []byte("\nevent: log\n")

func (c *countWriter) Write(p []byte) (int, error) {
	c.bytes += int64(len(p))
	k := len(eventLine) - 1
	// A match across writes (however short they are) ends in p and starts
	// in the last k bytes before it; one inside either alone is counted
	// where it lies.
	if len(c.tail) > 0 {
		joined := append(append(make([]byte, 0, 2*k), c.tail...), p[:min(len(p), k)]...)
		c.n += int64(bytes.Count(joined, eventLine))
	}
	c.n += int64(bytes.Count(p, eventLine))
	if len(p) >= k {
		c.tail = append(c.tail[:0], p[len(p)-k:]...)
	} else {
		c.tail = append(c.tail, p...)
		c.tail = append(c.tail[:0], c.tail[max(0, len(c.tail)-k):]...)
	}
	return len(p), nil
}

// readSSE GETs url and counts the entries and bytes of the stream.
func readSSE(ctx context.Context, hc *http.Client, url, key string, buf []byte) (entries, n int64, err error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return 0, 0, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, 0, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(msg))
	}
	var cw countWriter
	_, err = io.CopyBuffer(&cw, resp.Body, buf)
	return cw.n, cw.bytes, err
}

// replay: one reader streams a finished build with dialect A follow=false;
// baseline: a minimal net/http handler writing the same SSE bytes from
// memory, read by the same reader.
func (r *runner) replay(ctx context.Context) error {
	id, err := r.finishedBuild(ctx)
	if err != nil {
		return err
	}
	want := int64(r.cfg.ReplayEntries + 1) // and the terminal entry
	url := r.srv.URL + "/v1/templates/builds/" + id + "/logs?follow=false"
	hc := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 1}}
	defer hc.CloseIdleConnections()

	// The bytes the server sends, kept for the baseline, and checked once
	// with the real SSE parser: every offset, in order, exactly once.
	body, err := r.fetch(ctx, hc, url)
	if err != nil {
		return err
	}
	if err := checkSSE(body, want); err != nil {
		return fmt.Errorf("replayed stream: %w", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mem := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		// The server writes in pieces of 64 KiB (its flush size); so does this.
		for b := body; len(b) > 0; {
			k := min(len(b), 64<<10)
			if _, err := w.Write(b[:k]); err != nil {
				return
			}
			b = b[k:]
		}
	})}
	go mem.Serve(ln)
	defer mem.Close()
	memURL := "http://" + ln.Addr().String() + "/"

	buf := make([]byte, 256<<10)
	var rates, mbs, baseRates, baseMBs, perCPU []float64
	for run := range r.cfg.Runs {
		start := time.Now()
		n, nb, err := readSSE(ctx, hc, memURL, "", buf)
		d := time.Since(start)
		if err != nil {
			return err
		}
		if n != want {
			return fmt.Errorf("baseline stream: %d entries, want %d", n, want)
		}
		baseRates, baseMBs = append(baseRates, float64(n)/d.Seconds()), append(baseMBs, float64(nb)/d.Seconds())

		cpu := r.srv.meter()
		start = time.Now()
		n, nb, err = readSSE(ctx, hc, url, r.srv.Key, buf)
		d = time.Since(start)
		if v, ok := cpu.per(float64(n)); ok {
			perCPU = append(perCPU, v)
		}
		if err != nil {
			return err
		}
		if n != want {
			return fmt.Errorf("replay: %d entries, want %d", n, want)
		}
		rates, mbs = append(rates, float64(n)/d.Seconds()), append(mbs, float64(nb)/d.Seconds())
		r.progress("replay run %d: %.0f entries/s (baseline %.0f)", run+1, rates[run], baseRates[run])
	}
	r.figs = append(r.figs,
		figure{scenario: "replay", name: fmt.Sprintf("entries/s (%s entries)", thousands(int64(r.cfg.ReplayEntries))), unit: perSecond,
			vals: rates, base: baseRates, baseName: "(bytes from memory)", target: "≥ 0.5× baseline", check: atLeastBase(0.5)},
		figure{scenario: "replay", name: "MB/s", unit: mbPerSecond, vals: mbs, base: baseMBs, baseName: "(bytes from memory)"},
	)
	if len(perCPU) > 0 {
		r.figs = append(r.figs, figure{scenario: "replay", name: "entries per server CPU-second", unit: perCPUSecond, vals: perCPU})
	}
	return nil
}

func (r *runner) fetch(ctx context.Context, hc *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+r.srv.Key)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// checkSSE parses body as a browser would and checks it holds the log
// events of offsets 0..want-1 in order.
func checkSSE(body []byte, want int64) error {
	rd := sse.NewReader(bytes.NewReader(body))
	var next int64
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if ev.Type != "log" || ev.ID != strconv.FormatInt(next, 10) {
			return fmt.Errorf("event %d: id %q type %q", next, ev.ID, ev.Type)
		}
		next++
	}
	if next != want {
		return fmt.Errorf("%d events, want %d", next, want)
	}
	return nil
}

// thousands writes n with comma separators.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
