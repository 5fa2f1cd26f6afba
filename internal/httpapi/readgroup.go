package httpapi

import (
	"context"
	"slices"
	"sync"

	"buildlog"
)

// readGroup lets the followers of a build who need the same store read
// share one. A commit wakes every follower at once; when memory cannot
// answer (a store shared with other servers, or followers behind what
// memory holds) each would otherwise query the store for the same offset:
// 2,000 followers at 10 commits/s made 20,000 queries a second.
//
// A shared read must never be older than a follower's wake-up, or it could
// miss the commit that woke it and the follower would wait for a commit
// that already happened. So reads are shared only among followers holding
// the same wake channel: a read begun by one of them began after that
// channel was made, so it sees every commit that closed an earlier one.
//
// The same holds for the status check a follower makes when a wake-up
// brings nothing at its offset (status): on a store shared by several
// servers the committing server wakes its followers twice per commit (its
// own notice, then the database's), and the second wake-up brings nothing;
// followers woken together share one Store.Build.
//
// A finished call stays shareable for as long as its wake channel is the
// followers' (later followers of the same wake-up, run one after another
// from the run queue, ask after it has finished): answers are kept, the
// newest first, up to keptBytes of log and keptCalls calls; a call whose
// wake channel has closed matches no one again and ages out.
type readGroup struct {
	mu       sync.Mutex
	calls    map[readKey]*readCall
	statuses map[readKey]*statusCall
	kept     []readKey // finished calls in calls and statuses, oldest first
	bytes    int       // log bytes of the finished reads kept
}

const (
	keptBytes = 4 << 20
	keptCalls = 1024
)

// keep notes a finished call under k (bytes of log for a read), and lets
// the oldest go past the bounds. g.mu is held.
func (g *readGroup) keep(k readKey, bytes int) {
	g.kept = append(g.kept, k)
	g.bytes += bytes
	for len(g.kept) > 0 && (g.bytes > keptBytes || len(g.kept) > keptCalls) {
		old := g.kept[0]
		g.kept[0] = readKey{}
		g.kept = g.kept[1:]
		if old.status {
			delete(g.statuses, old)
			continue
		}
		if c := g.calls[old]; c != nil {
			g.bytes -= size(c.chunks)
			delete(g.calls, old)
		}
	}
	if len(g.kept) == 0 {
		g.kept = nil
	}
}

type readKey struct {
	build  string
	from   uint64
	wake   <-chan struct{}
	status bool
}

type readCall struct {
	done   chan struct{}
	chunks []buildlog.Chunk
	err    error
}

type statusCall struct {
	done  chan struct{}
	build *buildlog.Build
	err   error
}

// read returns the store's chunks of build from offset from on, for a
// follower holding wake. The slice is the caller's own (callers trim it in
// place); the bytes are shared and never written.
func (g *readGroup) read(ctx context.Context, st buildlog.Store, build string, from uint64, wake <-chan struct{}) ([]buildlog.Chunk, error) {
	k := readKey{build: build, from: from, wake: wake}
	g.mu.Lock()
	if c := g.calls[k]; c != nil {
		g.mu.Unlock()
		select {
		case <-c.done:
			if c.err == nil {
				return slices.Clone(c.chunks), nil
			}
			// The failure may be the leader's own (its client left): read
			// for ourselves rather than inherit it.
			return st.ReadLog(ctx, build, from, readPage)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if g.calls == nil {
		g.calls = make(map[readKey]*readCall)
	}
	c := &readCall{done: make(chan struct{})}
	g.calls[k] = c
	g.mu.Unlock()

	c.chunks, c.err = st.ReadLog(ctx, build, from, readPage)
	g.mu.Lock()
	if c.err != nil {
		delete(g.calls, k)
	} else {
		g.keep(k, size(c.chunks))
	}
	g.mu.Unlock()
	close(c.done)
	return slices.Clone(c.chunks), c.err
}

// status returns the store's record of build for a follower holding wake.
// The record is shared: callers only read it.
func (g *readGroup) status(ctx context.Context, st buildlog.Store, build string, wake <-chan struct{}) (*buildlog.Build, error) {
	k := readKey{build: build, wake: wake, status: true}
	g.mu.Lock()
	if c := g.statuses[k]; c != nil {
		g.mu.Unlock()
		select {
		case <-c.done:
			if c.err == nil {
				return c.build, nil
			}
			return st.Build(ctx, build) // perhaps the leader's own failure, as in read
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if g.statuses == nil {
		g.statuses = make(map[readKey]*statusCall)
	}
	c := &statusCall{done: make(chan struct{})}
	g.statuses[k] = c
	g.mu.Unlock()

	c.build, c.err = st.Build(ctx, build)
	g.mu.Lock()
	if c.err != nil {
		delete(g.statuses, k)
	} else {
		g.keep(k, 0)
	}
	g.mu.Unlock()
	close(c.done)
	return c.build, c.err
}
