package httpapi_test

import (
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A replay many store pages long arrives whole and in order, from the start
// and from the middle, and a reader that leaves part way leaves nothing
// running behind it (the next page is read while one is sent).
func TestLongReplay(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	big := strings.Repeat("r", 1000)
	const batches, per = 14, 500 // ~7 MB: several 1 MiB store reads
	for range batches {
		es := make([]map[string]any, per)
		for i := range es {
			es[i] = map[string]any{"message": big}
		}
		s.append(id, es)
	}
	total := batches * per
	for _, from := range []int{0, 1, 2499, total - 1} {
		st := s.open("/v1/templates/builds/"+id+"/logs?follow=false&offset="+strconv.Itoa(from), adminKey)
		evs := st.all(t, 60*time.Second)
		if len(evs) != total-from {
			t.Fatalf("replay from %d: %d events, want %d", from, len(evs), total-from)
		}
		checkDense(t, evs, uint64(from))
	}

	base := runtime.NumGoroutine()
	for range 30 {
		st := s.open("/v1/templates/builds/"+id+"/logs?follow=false", adminKey)
		for range 100 {
			if _, err := st.rd.Next(); err != nil {
				t.Fatal(err)
			}
		}
		st.close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+5 {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before, %d after 30 readers left part way", base, runtime.NumGoroutine())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
