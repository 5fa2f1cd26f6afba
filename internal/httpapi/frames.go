package httpapi

import (
	"sync"

	"buildlog"
)

// frameCache holds the rendered bytes of recent stretches of followed
// logs, so that the followers of a build who are sent the same entries in
// the same form share one rendering of them and write it as it is: at
// 2,000 followers a commit was framed 2,000 times, byte for byte the same,
// and copied through a buffer of each follower's own.
//
// A stretch is named by its build, its offsets and its form; what a form
// renders at given offsets never changes (a log only grows, and dialect
// B's terminal frame depends only on how the build ended), so a rendering
// may be reused for as long as it is kept. It is kept while the cache's
// bytes allow: followers woken by the same commit ask within milliseconds,
// and one that asks late renders for itself.
type frameCache struct {
	mu    sync.Mutex
	m     map[frameKey]*frameCall
	fifo  []frameKey // in the order added, oldest first
	bytes int        // rendered bytes of the finished calls in m
}

type frameForm uint8

const (
	frameSSE    frameForm = iota // dialect A, text/event-stream
	frameNDJSON                  // dialect A, application/x-ndjson
	frameB                       // dialect B
)

type frameKey struct {
	build    string
	from, to uint64
	form     frameForm
}

type frameCall struct {
	done chan struct{}
	b    []byte
	err  error
}

const (
	// sharedInput is the most log bytes a shared rendering covers: live
	// commits are far smaller; a follower catching up through pages of
	// a long log is alone at its offsets and frames as it writes.
	sharedInput = 32 << 10
	// frameCacheBytes and frameCacheCalls bound what the cache keeps.
	frameCacheBytes = 4 << 20
	frameCacheCalls = 4096
)

// shareable says a rendering of chunks may go through the cache. Not
// when they hold an omission notice: a notice stands for the part of the
// dropped range from where its reader came to it, which the key (the
// chunks' offsets) does not say, so two readers with the same key may
// need different notices. Notices are rare; rendering them apart is cheap.
func shareable(chunks []buildlog.Chunk) bool {
	if len(chunks) == 0 || size(chunks) > sharedInput {
		return false
	}
	for _, c := range chunks {
		if c.Notice {
			return false
		}
	}
	return true
}

// get returns the rendering of k, made by render once for every caller
// that asks while it is kept. The bytes are shared: callers only read
// them. A failed rendering is not shared (it may be the renderer's own,
// its client gone): each caller then renders for itself.
func (fc *frameCache) get(k frameKey, render func() ([]byte, error)) ([]byte, error) {
	fc.mu.Lock()
	if c := fc.m[k]; c != nil {
		fc.mu.Unlock()
		<-c.done
		if c.err == nil {
			return c.b, nil
		}
		return render()
	}
	if fc.m == nil {
		fc.m = make(map[frameKey]*frameCall)
	}
	c := &frameCall{done: make(chan struct{})}
	fc.m[k] = c
	fc.fifo = append(fc.fifo, k)
	fc.mu.Unlock()

	c.b, c.err = render()

	fc.mu.Lock()
	switch {
	case fc.m[k] != c:
		// Evicted while rendering: its waiters have it; it is not counted.
	case c.err != nil:
		delete(fc.m, k)
	default:
		fc.bytes += len(c.b)
	}
	close(c.done)
	for len(fc.fifo) > 0 && (fc.bytes > frameCacheBytes || len(fc.fifo) > frameCacheCalls) {
		old := fc.fifo[0]
		fc.fifo[0] = frameKey{}
		fc.fifo = fc.fifo[1:]
		if oc := fc.m[old]; oc != nil {
			select {
			case <-oc.done:
				fc.bytes -= len(oc.b)
			default: // still rendering: not yet counted
			}
			delete(fc.m, old)
		}
	}
	if len(fc.fifo) == 0 {
		fc.fifo = nil // let the slice's array go rather than creep along it
	}
	fc.mu.Unlock()
	return c.b, c.err
}
