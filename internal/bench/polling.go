package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// polling: dialect C's loop, startFromHead then nextToken until it is
// absent, over the finished build replay reads; lines/s. No baseline: the
// dialect formats every line anew, which is what it costs.
func (r *runner) polling(ctx context.Context) error {
	id, err := r.finishedBuild(ctx)
	if err != nil {
		return err
	}
	want := r.cfg.ReplayEntries + 1
	hc := newClient(r.srv.URL, r.srv.Key, 1)
	defer hc.close()
	var rates, perCPU []float64
	var pages int
	for run := range r.cfg.Runs {
		cpu := r.srv.meter()
		start := time.Now()
		n, p, err := pollAll(ctx, hc, id, r.cfg.PollLimit)
		d := time.Since(start)
		if err != nil {
			return err
		}
		if v, ok := cpu.per(float64(n)); ok {
			perCPU = append(perCPU, v)
		}
		if n != want {
			return fmt.Errorf("polling read %d lines, want %d", n, want)
		}
		pages = p
		rates = append(rates, float64(n)/d.Seconds())
		r.progress("polling run %d: %.0f lines/s in %d pages", run+1, rates[run], p)
	}
	r.figs = append(r.figs, figure{scenario: "polling",
		name: fmt.Sprintf("lines/s (%s lines, %d pages of %d)", thousands(int64(r.cfg.ReplayEntries)), pages, r.cfg.PollLimit),
		unit: perSecond, vals: rates})
	if len(perCPU) > 0 {
		r.figs = append(r.figs, figure{scenario: "polling", name: "lines per server CPU-second", unit: perCPUSecond, vals: perCPU})
	}
	return nil
}

// pollAll reads a build's whole log through dialect C and returns the
// lines and pages it took.
func pollAll(ctx context.Context, c *client, id string, limit int) (lines, pages int, err error) {
	var page struct {
		Logs      []json.RawMessage `json:"logs"`
		NextToken *string           `json:"nextToken"`
	}
	q := url.Values{"limit": {strconv.Itoa(limit)}, "startFromHead": {"true"}}
	for {
		page.Logs, page.NextToken = page.Logs[:0], nil
		if err := c.do(ctx, http.MethodGet, "/v1/builds/"+id+"/logs?"+q.Encode(), nil, &page); err != nil {
			return lines, pages, err
		}
		lines += len(page.Logs)
		pages++
		if page.NextToken == nil {
			return lines, pages, nil
		}
		if len(page.Logs) == 0 {
			// A finished build's last page leaves the token out; an empty
			// page with a token would loop forever.
			return lines, pages, fmt.Errorf("page %d: no lines but a nextToken", pages)
		}
		q = url.Values{"limit": {strconv.Itoa(limit)}, "nextToken": {*page.NextToken}}
	}
}
