package httpapi_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/httpapi"
)

func TestCreateBuild(t *testing.T) {
	s := newServer(t)
	r := s.want(s.do("POST", "/v1/templates/tmpl_1/builds", adminKey, nil), 201).json(t)
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(r["build_id"].(string)) {
		t.Fatalf("generated id %v is not a UUID", r["build_id"])
	}
	if r["status"] != "queued" || r["template_id"] != "tmpl_1" || r["team"] != "default" || r["next_offset"] != 0.0 {
		t.Fatalf("new build %v", r)
	}
	for _, absent := range []string{"started_at", "finished_at", "result", "namespace", "total_steps", "secrets"} {
		if _, ok := r[absent]; ok {
			t.Errorf("new build has %s: %v", absent, r)
		}
	}
	body := map[string]any{"build_id": "tb_x", "namespace": "default", "name": "claude-code", "version": "1.0.0",
		"total_steps": 5, "max_attempts": 3, "metadata": map[string]any{"git": "abc"}, "secrets": []string{"hunter2"}}
	r = s.want(s.do("POST", "/v1/templates/tmpl_1/builds", adminKey, body), 201).json(t)
	if r["name"] != "claude-code" || r["version"] != "1.0.0" || r["total_steps"] != 5.0 || r["metadata"].(map[string]any)["git"] != "abc" {
		t.Fatalf("build %v", r)
	}
	if strings.Contains(s.do("GET", "/v1/templates/builds/tb_x", adminKey, nil).String(), "hunter2") {
		t.Fatal("secrets are returned")
	}
	s.want(s.do("POST", "/v1/templates/tmpl_1/builds", adminKey, map[string]any{"build_id": "tb_x"}), 409)

	for body, field := range map[string]string{
		`{"build_id":"../x"}`:                  "build_id",
		`{"name":"n","version":"v1"}`:          "version",
		`{"surprise":true}`:                    "surprise",
		`{"build_id":"tb_y","total_steps":-1}`: "total_steps",
	} {
		msg := s.want(s.do("POST", "/v1/templates/tmpl_1/builds", adminKey, body), 400).errMessage(t)
		if !strings.Contains(msg, field) {
			t.Errorf("%s: message %q does not name %s", body, msg, field)
		}
	}
	s.want(s.do("GET", "/v1/templates/builds/tb_y", adminKey, nil), 404)
	s.want(s.do("POST", "/v1/templates/tmpl_1/builds", adminKey, "x", "Content-Type", "text/plain"), 415)
}

func TestAppendForms(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	if f, n := s.append(id, msgs(0, 3)); f != 0 || n != 3 {
		t.Fatalf("array: %d,%d", f, n)
	}
	if f, n := s.append(id, map[string]any{"entries": msgs(3, 2)}); f != 3 || n != 5 {
		t.Fatalf("object: %d,%d", f, n)
	}
	nd := "{\"message\":\"a\"}\n{\"message\":\"b\",\"level\":\"warn\"}\n"
	r := s.want(s.do("POST", "/v1/templates/builds/"+id+"/logs", adminKey, nd, "Content-Type", "application/x-ndjson"), 200).json(t)
	if r["first_offset"] != 5.0 || r["next_offset"] != 7.0 {
		t.Fatalf("ndjson: %v", r)
	}
	b := s.build(id)
	if b["status"] != "building" || b["entry_count"] != 7.0 || b["started_at"] == nil {
		t.Fatalf("after appends: %v", b)
	}
}

func TestIdempotentRetry(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	path := "/v1/templates/builds/" + id + "/logs"
	batch := map[string]any{"entries": msgs(0, 3), "first_offset": 0}
	first := s.want(s.do("POST", path, adminKey, batch), 200).body
	// The reply was lost; the producer retries the same batch.
	again := s.want(s.do("POST", path, adminKey, batch), 200).body
	if string(first) != string(again) {
		t.Fatalf("retry answered %s, first time %s", again, first)
	}
	if n := s.nextOffset(id); n != 3 {
		t.Fatalf("next_offset %d after a retried batch of 3", n)
	}
	// NDJSON with the header, then its retry after another batch landed.
	nd := "{\"message\":\"x\"}\n{\"message\":\"y\"}\n"
	s.want(s.do("POST", path, adminKey, nd, "Content-Type", "application/x-ndjson", "Buildlog-First-Offset", "3"), 200)
	s.append(id, msgs(5, 1))
	r := s.want(s.do("POST", path, adminKey, nd, "Content-Type", "application/x-ndjson", "Buildlog-First-Offset", "3"), 200).json(t)
	if r["first_offset"] != 3.0 || r["next_offset"] != 5.0 {
		t.Fatalf("late retry answered %v, want 3..5", r)
	}
	// Different entries at a used offset, or a future offset: conflict with next_offset.
	for _, body := range []any{
		map[string]any{"entries": msgs(100, 3), "first_offset": 0},
		map[string]any{"entries": msgs(0, 1), "first_offset": 9},
		map[string]any{"entries": msgs(0, 1), "first_offset": 1},
	} {
		r := s.want(s.do("POST", path, adminKey, body), 409)
		var e struct {
			Error struct {
				NextOffset *uint64 `json:"next_offset"`
			} `json:"error"`
		}
		json.Unmarshal(r.body, &e)
		if e.Error.NextOffset == nil || *e.Error.NextOffset != 6 {
			t.Fatalf("conflict body %s lacks next_offset 6", r.body)
		}
	}
	if n := s.nextOffset(id); n != 6 {
		t.Fatalf("next_offset %d, want 6", n)
	}
	s.want(s.do("POST", path, adminKey, msgs(0, 1), "Buildlog-First-Offset", "x"), 400)
}

// TestIdempotentRetryFingerprints: a batch whose every timestamp the
// producer gave, on a build without secrets, is fingerprinted from its
// stored encoding, and any other from the entries as sent; either way a
// retry is answered as the first time and a different batch at the same
// offset is a conflict, whatever a secret masked or a timestamp filled.
func TestIdempotentRetryFingerprints(t *testing.T) {
	s := newServer(t)
	stamped := func(msg string, n int) []map[string]any {
		out := msgs(0, n)
		for i := range out {
			out[i]["message"] = fmt.Sprint(msg, i)
			out[i]["timestamp"] = fmt.Sprintf("2026-03-17T00:00:1%dZ", i)
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		build   map[string]any
		entries func(msg string) []map[string]any
	}{
		{"timestamps given", nil, func(msg string) []map[string]any { return stamped(msg, 3) }},
		{"a timestamp filled", nil, func(msg string) []map[string]any {
			e := stamped(msg, 3)
			delete(e[1], "timestamp")
			return e
		}},
		{"secrets masked", map[string]any{"secrets": []string{"hunter2"}}, func(msg string) []map[string]any {
			return stamped("pw hunter2 "+msg, 3)
		}},
	} {
		id := s.newBuild(tc.build)
		path := "/v1/templates/builds/" + id + "/logs"
		batch := map[string]any{"entries": tc.entries("a"), "first_offset": 0}
		first := s.want(s.do("POST", path, adminKey, batch), 200).body
		again := s.want(s.do("POST", path, adminKey, batch), 200).body
		if string(first) != string(again) {
			t.Errorf("%s: retry answered %s, first time %s", tc.name, again, first)
		}
		s.want(s.do("POST", path, adminKey, map[string]any{"entries": tc.entries("b"), "first_offset": 0}), 409)
		if n := s.nextOffset(id); n != 3 {
			t.Errorf("%s: next_offset %d after a retried batch of 3", tc.name, n)
		}
	}
}

// TestConcurrentAppendsOverHTTP sends appends to one build from several
// connections at once: each batch must get its own contiguous range, the
// ranges must tile the log with no gap or overlap, and the stored log must
// hold each batch's entries in order within its range.
func TestConcurrentAppendsOverHTTP(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	const workers, batches = 8, 25

	type span struct {
		worker, batch int
		first, next   uint64
	}
	var (
		mu    sync.Mutex
		spans []span
		wg    sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for b := range batches {
				n := 1 + rng.IntN(20)
				entries := make([]map[string]any, n)
				for i := range entries {
					entries[i] = map[string]any{"message": fmt.Sprintf("w%d b%d i%d", w, b, i)}
				}
				// s.append calls t.Fatal, which must not run off the test
				// goroutine; check the reply here instead.
				r := s.do("POST", "/v1/templates/builds/"+id+"/logs", adminKey, entries)
				if r.code != 200 {
					t.Errorf("worker %d batch %d: %s", w, b, r)
					return
				}
				var out struct {
					First uint64 `json:"first_offset"`
					Next  uint64 `json:"next_offset"`
				}
				if err := json.Unmarshal(r.body, &out); err != nil || out.Next-out.First != uint64(n) {
					t.Errorf("worker %d batch %d of %d entries: reply %s", w, b, n, r)
					return
				}
				mu.Lock()
				spans = append(spans, span{w, b, out.First, out.Next})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	sort.Slice(spans, func(i, j int) bool { return spans[i].first < spans[j].first })
	var at uint64
	for _, sp := range spans {
		if sp.first != at {
			t.Fatalf("batch w%d b%d starts at %d, want %d (gap or overlap)", sp.worker, sp.batch, sp.first, at)
		}
		at = sp.next
	}
	if got := s.nextOffset(id); got != at {
		t.Fatalf("next_offset %d, replies add up to %d", got, at)
	}

	s.want(s.finish(id, "ready"), 200)
	evs := s.open("/v1/templates/builds/"+id+"/logs?follow=false", adminKey).all(t, 20*time.Second)
	checkDense(t, evs, 0)
	if uint64(len(evs)) != at+1 {
		t.Fatalf("%d events, want %d entries and the terminal one", len(evs), at+1)
	}
	for _, sp := range spans {
		for i := sp.first; i < sp.next; i++ {
			var e struct{ Message string }
			json.Unmarshal(evs[i].Data, &e)
			if want := fmt.Sprintf("w%d b%d i%d", sp.worker, sp.batch, i-sp.first); e.Message != want {
				t.Fatalf("offset %d holds %q, want %q", i, e.Message, want)
			}
		}
	}
}

// TestFollowCatchesUpPastOneRead starts a follower far behind on a running
// build: the store answers it in bounded reads (MaxReadChunks chunks or a
// page of bytes), and the follower must keep reading until it reaches the
// end, not wait for a commit or a keepalive after the first read.
func TestFollowCatchesUpPastOneRead(t *testing.T) {
	s := newServer(t, func(c *httpapi.Config) { c.Keepalive = time.Hour })
	id := s.newBuild(nil)
	const batches = 3*buildlog.MaxReadChunks + 17
	for i := range batches {
		s.append(id, msgs(i, 1))
	}
	st := s.open("/v1/templates/builds/"+id+"/logs?follow=true", adminKey)
	got := make(chan int, 1)
	go func() {
		n := 0
		for n < batches {
			ev, err := st.rd.Next()
			if err != nil {
				break
			}
			if ev.Type == "log" {
				n++
			}
		}
		got <- n
	}()
	select {
	case n := <-got:
		if n != batches {
			t.Fatalf("stream ended after %d of %d entries", n, batches)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("follower stalled before the end of a log the store had in full")
	}
}

// Every rejected append leaves the log as it was.
func TestBadInputChangesNothing(t *testing.T) {
	s := newServer(t, func(c *httpapi.Config) {
		c.MaxBody = 4096
		c.Limits.MaxBatch = 5
		c.Limits.MaxMessage = 100
	})
	id := s.newBuild(nil)
	s.append(id, msgs(0, 2))
	path := "/v1/templates/builds/" + id + "/logs"
	cases := []struct {
		name  string
		body  string
		ctype string
		code  int
		want  string
	}{
		{"bad level mid-batch", `[{"message":"a"},{"message":"b"},{"message":"c"},{"message":"d","level":"loud"}]`, "", 400, "entries[3].level: want one of debug, info, warn, error"},
		{"unknown field", `[{"message":"a","extra":1}]`, "", 400, "entries[0].extra"},
		{"missing message", `[{"level":"info"}]`, "", 400, "entries[0].message"},
		{"long message", `[{"message":"` + strings.Repeat("x", 101) + `"}]`, "", 400, "entries[0].message"},
		{"too many entries", `[` + strings.Repeat(`{"message":"a"},`, 5) + `{"message":"a"}]`, "", 413, "limit is 5"},
		{"body too large", `[{"message":"` + strings.Repeat("x", 5000) + `"}]`, "", 413, "byte limit"},
		{"not json", `{{{`, "", 400, "body"},
		{"ndjson bad line", "{\"message\":\"a\"}\nnot json\n", "application/x-ndjson", 400, "entries[1]"},
		{"wrong type", `hello`, "text/plain", 415, "Content-Type"},
		{"end kind", `[{"message":"a","kind":"end"}]`, "", 400, "entries[0].kind"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ct := c.ctype
			if ct == "" {
				ct = "application/json"
			}
			r := s.want(s.do("POST", path, adminKey, c.body, "Content-Type", ct), c.code)
			if msg := r.errMessage(t); !strings.Contains(msg, c.want) {
				t.Errorf("message %q does not contain %q", msg, c.want)
			}
			if n := s.nextOffset(id); n != 2 {
				t.Fatalf("next_offset %d after a rejected append, want 2", n)
			}
		})
	}
}

func TestFinish(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	s.append(id, msgs(0, 2))
	s.want(s.do("POST", "/v1/templates/builds/"+id+"/finish", adminKey, `{"status":"done"}`), 400)
	s.want(s.do("POST", "/v1/templates/builds/"+id+"/finish", adminKey, `{"status":"building"}`), 400)
	s.want(s.do("POST", "/v1/templates/builds/"+id+"/finish", adminKey, `{}`), 400)
	r := s.want(s.do("POST", "/v1/templates/builds/"+id+"/finish", adminKey,
		`{"status":"failed","message":"exit 2","result":{"code":2},"error_detail":{"step":"npm"}}`), 200).json(t)
	if r["status"] != "failed" || r["finished_at"] == nil || r["next_offset"] != 3.0 || r["result"].(map[string]any)["code"] != 2.0 {
		t.Fatalf("finished build %v", r)
	}
	s.want(s.do("POST", "/v1/templates/builds/"+id+"/finish", adminKey, `{"status":"failed"}`), 200)
	s.want(s.finish(id, "ready"), 409)
	s.want(s.do("POST", "/v1/templates/builds/"+id+"/logs", adminKey, msgs(0, 1)), 409)
	if n := s.nextOffset(id); n != 3 {
		t.Fatalf("next_offset %d after repeats, want 3", n)
	}
	evs := s.open("/v1/templates/builds/"+id+"/logs?offset=2", adminKey).all(t, 5e9)
	var last map[string]any
	json.Unmarshal(evs[len(evs)-1].Data, &last)
	if len(evs) != 1 || last["kind"] != "end" || last["level"] != "error" || last["message"] != "exit 2" || last["error_detail"] == nil {
		t.Fatalf("terminal entry %s", evs[len(evs)-1].Data)
	}

	// Cancelling a build that never started writes kind cancelled.
	id2 := s.newBuild(nil)
	s.want(s.finish(id2, "cancelled"), 200)
	evs = s.open("/v1/templates/builds/"+id2+"/logs", adminKey).all(t, 5e9)
	json.Unmarshal(evs[0].Data, &last)
	if len(evs) != 1 || last["kind"] != "cancelled" || last["level"] != "error" {
		t.Fatalf("cancelled entry %s", evs[0].Data)
	}
	if b := s.build(id2); b["started_at"] != nil || b["status"] != "cancelled" {
		t.Fatalf("cancelled queued build %v", b)
	}
}

func TestListBuilds(t *testing.T) {
	s := newServer(t)
	var ids []string
	for i := 0; i < 7; i++ {
		ids = append(ids, s.newBuild(nil))
	}
	s.append(ids[0], msgs(0, 1))
	seen := map[string]bool{}
	cursor := ""
	pages := 0
	for {
		path := "/v1/templates/builds?template_id=tmpl_1&limit=3"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		var page struct {
			Builds []struct {
				ID string `json:"build_id"`
			} `json:"builds"`
			NextCursor string `json:"next_cursor"`
		}
		json.Unmarshal(s.want(s.do("GET", path, adminKey, nil), 200).body, &page)
		pages++
		for _, b := range page.Builds {
			if seen[b.ID] {
				t.Fatalf("build %s listed twice", b.ID)
			}
			seen[b.ID] = true
		}
		if pages == 1 && page.Builds[0].ID != ids[6] {
			t.Fatalf("first listed %s, want newest %s", page.Builds[0].ID, ids[6])
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if len(seen) != 7 || pages != 3 {
		t.Fatalf("saw %d builds in %d pages", len(seen), pages)
	}
	r := s.want(s.do("GET", "/v1/templates/builds?status=building", adminKey, nil), 200)
	if !strings.Contains(r.String(), ids[0]) || strings.Contains(r.String(), ids[1]) {
		t.Fatalf("status filter: %s", r)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "status=done", "cursor=zzz"} {
		s.want(s.do("GET", "/v1/templates/builds?"+q, adminKey, nil), 400)
	}
}
