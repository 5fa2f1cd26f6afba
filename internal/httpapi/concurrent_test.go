package httpapi_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/httpapi"
)

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
