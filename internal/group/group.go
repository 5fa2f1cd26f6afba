// Package group is group commit: requests queue to one writer goroutine,
// which takes everything queued when it is free (up to a bound in entries
// and bytes) and commits it as one transaction, with one flush, then
// answers each request. Nothing waits for company: a request that finds
// the writer idle is committed alone at once; requests that arrive during
// a commit form the next group. This is how one writer serves hundreds of
// producers appending a few lines each at the cost of a few flushes.
package group

import (
	"context"
	"sync"
	"sync/atomic"

	"buildlog"
)

// Request is one operation for the writer. The commit function reads Op
// and sets Err (and whatever result Op holds) before the request is
// answered.
type Request[T any] struct {
	Op T
	// Entries and Bytes are the request's weight against the group bound.
	Entries, Bytes int
	// Alone asks for a group of its own (a bulk delete, say), so that its
	// failure or its length touches no other request.
	Alone bool
	// Err is the request's own answer.
	Err error

	state atomic.Int32
	done  chan struct{}
}

const (
	queued int32 = iota
	taken
	abandoned
)

// Limits bound one group. A single request larger than a bound still goes,
// alone.
type Limits struct {
	Entries int
	Bytes   int
}

// DefaultLimits keep a group to what one transaction writes in a few
// milliseconds, so a burst of large batches does not hold small appends
// behind one long commit.
var DefaultLimits = Limits{Entries: 20_000, Bytes: 8 << 20}

// Queue feeds one writer goroutine. It is safe for concurrent use.
type Queue[T any] struct {
	commit func(group []*Request[T])
	limits Limits

	mu      sync.Mutex
	pending []*Request[T]
	closed  bool
	wake    chan struct{}
	stopped chan struct{}

	groups, requests atomic.Int64
}

// New starts the writer. commit runs one group at a time, never
// concurrently; it must set each request's Err (nil on success).
func New[T any](limits Limits, commit func(group []*Request[T])) *Queue[T] {
	if limits.Entries <= 0 {
		limits.Entries = DefaultLimits.Entries
	}
	if limits.Bytes <= 0 {
		limits.Bytes = DefaultLimits.Bytes
	}
	q := &Queue[T]{commit: commit, limits: limits, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	go q.run()
	return q
}

// ErrClosed answers requests made after Close.
var ErrClosed = buildlog.Errorf(buildlog.EUnavailable, "the store is closed")

// Do queues r and waits for its answer. If ctx ends while r is still
// queued, r is dropped (never committed) and Do returns ctx's error; once
// the writer has taken r, Do waits for the commit, so that an answer is
// always the truth about r: committed with Err nil, or not committed.
func (q *Queue[T]) Do(ctx context.Context, r *Request[T]) error {
	r.done = make(chan struct{})
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	q.pending = append(q.pending, r)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	select {
	case <-r.done:
		return r.Err
	case <-ctx.Done():
		if r.state.CompareAndSwap(queued, abandoned) {
			return ctx.Err()
		}
		<-r.done
		return r.Err
	}
}

// Close lets the writer finish what is queued, then stops it. Requests
// after Close get ErrClosed.
func (q *Queue[T]) Close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	q.mu.Unlock()
	<-q.stopped
}

// Stats reports how many groups were committed and how many requests they
// held, for metrics and tests.
func (q *Queue[T]) Stats() (groups, requests int64) {
	return q.groups.Load(), q.requests.Load()
}

func (q *Queue[T]) run() {
	defer close(q.stopped)
	var group []*Request[T]
	for {
		q.mu.Lock()
		for len(q.pending) == 0 {
			if q.closed {
				q.mu.Unlock()
				return
			}
			q.mu.Unlock()
			<-q.wake
			q.mu.Lock()
		}
		group = q.take(group[:0])
		q.mu.Unlock()

		live := group[:0]
		for _, r := range group {
			if r.state.CompareAndSwap(queued, taken) {
				live = append(live, r)
			}
		}
		if len(live) > 0 {
			q.commit(live)
			q.groups.Add(1)
			q.requests.Add(int64(len(live)))
			for _, r := range live {
				close(r.done)
			}
		}
		clear(group)
	}
}

// take moves the next group off the pending list; q.mu is held. A request
// that wants to be alone ends the group before it, or forms one by itself.
func (q *Queue[T]) take(group []*Request[T]) []*Request[T] {
	entries, bytes, n := 0, 0, 0
	for _, r := range q.pending {
		if n > 0 && (r.Alone || entries+r.Entries > q.limits.Entries || bytes+r.Bytes > q.limits.Bytes) {
			break
		}
		group = append(group, r)
		entries, bytes, n = entries+r.Entries, bytes+r.Bytes, n+1
		if r.Alone {
			break
		}
	}
	rest := copy(q.pending, q.pending[n:])
	clear(q.pending[rest:])
	q.pending = q.pending[:rest]
	return group
}
