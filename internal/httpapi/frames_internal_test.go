package httpapi

import (
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"buildlog"
)

// Followers at the same stretch of a build share one rendering of it.
func TestFrameCacheShares(t *testing.T) {
	var fc frameCache
	var renders atomic.Int32
	gate := make(chan struct{})
	k := frameKey{build: "b", from: 3, to: 13, form: frameSSE}
	render := func() ([]byte, error) {
		renders.Add(1)
		<-gate
		return []byte("frames"), nil
	}
	const followers = 50
	var wg sync.WaitGroup
	got := make([][]byte, followers)
	for i := range followers {
		wg.Go(func() {
			b, err := fc.get(k, render)
			if err != nil {
				t.Error(err)
			}
			got[i] = b
		})
	}
	for renders.Load() == 0 {
		runtime.Gosched() // until the first is rendering
	}
	close(gate)
	wg.Wait()
	// Latecomers (after the first finished) still find it kept.
	if b, _ := fc.get(k, render); string(b) != "frames" {
		t.Fatalf("kept rendering %q", b)
	}
	if n := renders.Load(); n != 1 {
		t.Fatalf("%d renderings for %d followers of one stretch, want 1", n, followers+1)
	}
	for i, b := range got {
		if string(b) != "frames" {
			t.Fatalf("follower %d got %q", i, b)
		}
	}
	// Another form or stretch is another rendering.
	for _, other := range []frameKey{{build: "b", from: 3, to: 13, form: frameB}, {build: "b", from: 4, to: 13}, {build: "c", from: 3, to: 13}} {
		fc.get(other, func() ([]byte, error) { renders.Add(1); return nil, nil })
	}
	if n := renders.Load(); n != 4 {
		t.Fatalf("%d renderings, want 4", n)
	}
}

// A failed rendering is not handed to the others, and the cache keeps no
// more than its bounds.
func TestFrameCacheFailuresAndBounds(t *testing.T) {
	var fc frameCache
	k := frameKey{build: "b"}
	boom := errors.New("client gone")
	if _, err := fc.get(k, func() ([]byte, error) { return nil, boom }); err != boom {
		t.Fatal(err)
	}
	b, err := fc.get(k, func() ([]byte, error) { return []byte("ok"), nil })
	if err != nil || string(b) != "ok" {
		t.Fatalf("after a failure: %q, %v", b, err)
	}
	big := []byte(strings.Repeat("x", 64<<10))
	for i := range 1000 {
		fc.get(frameKey{build: "b", from: uint64(i + 1)}, func() ([]byte, error) { return big, nil })
	}
	if fc.bytes > frameCacheBytes || len(fc.m) > frameCacheCalls || len(fc.fifo) > frameCacheCalls {
		t.Fatalf("cache holds %d bytes in %d renderings (%d queued), bounds %d and %d", fc.bytes, len(fc.m), len(fc.fifo), frameCacheBytes, frameCacheCalls)
	}
	for i := range 5000 {
		fc.get(frameKey{build: "c", from: uint64(i)}, func() ([]byte, error) { return nil, nil })
	}
	if len(fc.m) > frameCacheCalls || len(fc.fifo) > frameCacheCalls {
		t.Fatalf("cache holds %d renderings (%d queued), bound %d", len(fc.m), len(fc.fifo), frameCacheCalls)
	}
}

// The shared rendering is what a stream would have framed entry by entry.
func TestRenderAMatchesFraming(t *testing.T) {
	c := buildlog.Chunk{First: 7, Count: 2, Data: []byte("{\"a\":1}\n{\"b\":2}\n")}
	want := "id: 7\nevent: log\ndata: {\"a\":1}\n\nid: 8\nevent: log\ndata: {\"b\":2}\n\n"
	if got := string(renderA([]buildlog.Chunk{c}, frameSSE)); got != want {
		t.Fatalf("SSE: %q, want %q", got, want)
	}
	if got := string(renderA([]buildlog.Chunk{c.From(8)}, frameNDJSON)); got != "{\"b\":2}\n" {
		t.Fatalf("NDJSON from 8: %q", got)
	}
}
