// Package live tells followers of a build that its log grew, and keeps the
// newest chunks of followed builds in memory so that keeping up with a live
// build costs no store read. It never blocks a writer: waking followers is
// closing a channel, and a follower that falls behind what memory holds
// simply reads the store, which is always the truth.
package live

import (
	"context"
	"sync"
	"time"

	"buildlog"
)

// DefaultRetain is how many bytes of recent log a followed build keeps in
// memory; a follower further behind reads the store.
const DefaultRetain = 4 << 20

// coalesce is the least time between two wake-ups of one build's
// followers. A commit after a quiet spell wakes them at once; commits that
// follow it closer than this are gathered into one wake-up at the end of
// the spell, so that a build committing a thousand times a second does not
// schedule each of its thousands of followers a thousand times a second:
// each wake-up costs every follower a scheduling, a read of memory and a
// write, whatever it carries. It bounds the delay a wake-up can add.
const coalesce = 2 * time.Millisecond

// Hub is the in-process fan-out of committed entries.
type Hub struct {
	retain int

	mu     sync.Mutex
	topics map[string]*topic
}

type topic struct {
	refs int // guarded by Hub.mu

	mu     sync.RWMutex
	wake   chan struct{}    // closed and replaced at every wake-up
	chunks []buildlog.Chunk // contiguous, ascending offsets
	size   int
	woke   time.Time // when wake was last closed
	due    bool      // a wake-up is scheduled (commits gathered within coalesce)
	wakes  int       // wake-ups so far (tests count them)
	// waiters are the followers waiting without a goroutine (OnWake),
	// called when wake closes.
	waiters map[*Follower]func()
}

// wakeLocked wakes the followers now, or schedules it: see coalesce.
// Called with t.mu held; the caller calls what it returns, the waiters
// to call back, once it has let go of t.mu.
func (t *topic) wakeLocked() []func() {
	if t.due {
		return nil // the scheduled wake-up covers this commit too
	}
	if wait := coalesce - time.Since(t.woke); wait > 0 {
		t.due = true
		time.AfterFunc(wait, func() {
			t.mu.Lock()
			t.due = false
			calls := t.closeLocked()
			t.mu.Unlock()
			call(calls)
		})
		return nil
	}
	return t.closeLocked()
}

func (t *topic) closeLocked() []func() {
	close(t.wake)
	t.wake = make(chan struct{})
	t.woke = time.Now()
	t.wakes++
	if len(t.waiters) == 0 {
		return nil
	}
	calls := make([]func(), 0, len(t.waiters))
	for _, fn := range t.waiters {
		calls = append(calls, fn)
	}
	clear(t.waiters)
	return calls
}

// call makes the waiters' calls outside the build's lock, so that the
// followers they start, reading and waiting again, do not queue on it.
func call(calls []func()) {
	for _, fn := range calls {
		fn()
	}
}

// New returns a hub keeping up to retain bytes per followed build
// (DefaultRetain when retain ≤ 0).
func New(retain int) *Hub {
	if retain <= 0 {
		retain = DefaultRetain
	}
	return &Hub{retain: retain, topics: make(map[string]*topic)}
}

// Follower is one reader's registration on a build. Close it when done.
type Follower struct {
	hub *Hub
	id  string
	t   *topic
}

// Follow registers interest in buildID. Register before reading the store,
// so no commit between the read and the first Wait goes unnoticed.
func (h *Hub) Follow(buildID string) *Follower {
	h.mu.Lock()
	t := h.topics[buildID]
	if t == nil {
		t = &topic{wake: make(chan struct{})}
		h.topics[buildID] = t
	}
	t.refs++
	h.mu.Unlock()
	return &Follower{hub: h, id: buildID, t: t}
}

// OnWake arranges for fn to be called once wake, a channel Wait
// returned, closes: the way to wait without a goroutine. fn runs on the
// committer's goroutine, so it must only hand off (queue work, say).
// It reports false, calling nothing, when wake has closed already. A
// later OnWake replaces an earlier one; StopWake cancels it.
func (f *Follower) OnWake(wake <-chan struct{}, fn func()) bool {
	t := f.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if wake != t.wake {
		return false
	}
	if t.waiters == nil {
		t.waiters = make(map[*Follower]func())
	}
	t.waiters[f] = fn
	return true
}

// StopWake cancels the follower's OnWake, if it has not been called.
func (f *Follower) StopWake() {
	t := f.t
	t.mu.Lock()
	delete(t.waiters, f)
	t.mu.Unlock()
}

// Close unregisters the follower; a build nobody follows costs nothing.
func (f *Follower) Close() {
	f.StopWake()
	h := f.hub
	h.mu.Lock()
	f.t.refs--
	if f.t.refs == 0 {
		delete(h.topics, f.id)
	}
	h.mu.Unlock()
}

// Wait returns a channel closed at the next commit to the build (or hub
// notice), or at most coalesce after it. Take it before reading, then
// wait on it only if the read found nothing new: a commit in between has
// closed it already, or will within coalesce. What memory holds is
// published at once; only the wake-up is gathered.
func (f *Follower) Wait() <-chan struct{} {
	f.t.mu.RLock()
	defer f.t.mu.RUnlock()
	return f.t.wake
}

// Read returns the retained chunks from offset from on. ok is false when
// memory cannot answer (from is outside what is retained), and the caller
// must read the store; ok with no chunks means nothing past from has been
// published since memory started tracking.
func (f *Follower) Read(from uint64) (chunks []buildlog.Chunk, ok bool) {
	t := f.t
	t.mu.RLock()
	defer t.mu.RUnlock()
	if len(t.chunks) == 0 {
		return nil, false
	}
	first, last := t.chunks[0], t.chunks[len(t.chunks)-1]
	if from < first.First || from > last.End() {
		return nil, false
	}
	if from == last.End() {
		return nil, true
	}
	i := len(t.chunks) - 1
	for i > 0 && t.chunks[i].First > from {
		i--
	}
	out := make([]buildlog.Chunk, len(t.chunks)-i)
	copy(out, t.chunks[i:])
	return out, true
}

// Publish records a committed chunk and wakes the build's followers. Chunks
// normally arrive in commit order; one that does not continue what memory
// holds restarts memory from it, so memory never claims a gap is empty.
func (h *Hub) Publish(buildID string, c buildlog.Chunk) {
	h.mu.Lock()
	t := h.topics[buildID]
	h.mu.Unlock()
	if t == nil || c.Count == 0 {
		return
	}
	t.mu.Lock()
	n := len(t.chunks)
	switch {
	case n > 0 && c.First == t.chunks[n-1].End():
		t.chunks = append(t.chunks, c)
		t.size += len(c.Data)
	case n > 0 && c.End() <= t.chunks[n-1].End():
		// An older commit published late: memory already has what follows it.
	default:
		t.chunks = append(t.chunks[:0], c)
		t.size = len(c.Data)
	}
	for t.size > h.retain && len(t.chunks) > 1 {
		t.size -= len(t.chunks[0].Data)
		t.chunks[0] = buildlog.Chunk{}
		t.chunks = t.chunks[1:]
	}
	calls := t.wakeLocked()
	t.mu.Unlock()
	call(calls)
}

// Notify says the build changed elsewhere (another server committed). What
// memory holds may no longer end at the log's end, so it is dropped and the
// followers, woken, read the store. buildID "" means every build.
func (h *Hub) Notify(buildID string) {
	h.mu.Lock()
	var ts []*topic
	if buildID == "" {
		for _, t := range h.topics {
			ts = append(ts, t)
		}
	} else if t := h.topics[buildID]; t != nil {
		ts = append(ts, t)
	}
	h.mu.Unlock()
	for _, t := range ts {
		t.mu.Lock()
		t.chunks, t.size = nil, 0
		calls := t.wakeLocked()
		t.mu.Unlock()
		call(calls)
	}
}

// Followed returns how many builds have followers; once every follower
// has closed it is 0 (TestFollowersDoNotLeak checks it).
func (h *Hub) Followed() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.topics)
}

// Store wraps a Store so that every commit made through it, whoever makes
// it (an HTTP handler, the idle sweep), is published to the hub.
type Store struct {
	buildlog.Store
	Hub *Hub

	// shared: other servers commit to the store too (it is a
	// buildlog.CommitWatcher). Another server's commit can then land
	// between this server's commit and its publication, so memory could not
	// vouch for where a log ends; commits only wake followers, who read the
	// store.
	shared bool
}

// Publishing returns s wrapped to publish its commits to h.
func (h *Hub) Publishing(s buildlog.Store) *Store {
	_, shared := s.(buildlog.CommitWatcher)
	return &Store{Store: s, Hub: h, shared: shared}
}

func (s *Store) publish(buildID string, c buildlog.Chunk) {
	if s.shared {
		s.Hub.Notify(buildID)
	} else {
		s.Hub.Publish(buildID, c)
	}
}

func (s *Store) Append(ctx context.Context, buildID string, b *buildlog.Batch, now time.Time) (buildlog.AppendResult, error) {
	res, err := s.Store.Append(ctx, buildID, b, now)
	if err == nil && !res.Replayed {
		s.publish(buildID, res.Chunk)
	}
	return res, err
}

func (s *Store) Finish(ctx context.Context, buildID string, f *buildlog.Finish, now time.Time) (*buildlog.Build, buildlog.Chunk, error) {
	b, c, err := s.Store.Finish(ctx, buildID, f, now)
	if err == nil && c.Count > 0 {
		s.publish(buildID, c)
	}
	return b, c, err
}
