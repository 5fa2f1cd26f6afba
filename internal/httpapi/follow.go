package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"buildlog"
	"buildlog/internal/live"
)

// readPage is how many bytes of log one store read fetches; a replay of any
// length streams page by page, so memory per reader stays bounded.
const readPage = 1 << 20

// readLog is the one ordered reader of a build's log that every dialect is
// a view of. It calls emit with the log's chunks from offset from on, in
// offset order, the first trimmed to start at from; emit reports whether it
// wrote anything (a filter may drop every entry). Without follow it stops
// at the log's end as of the call. With follow it then waits for commits
// until it has emitted the terminal chunk (see follow), and returns nil
// when done or when the client, a drain or the key's revocation ends it.
func (a *API) readLog(ctx context.Context, b *buildlog.Build, from uint64, follow bool,
	emit func([]buildlog.Chunk) (wrote bool, err error), idle func() error) error {
	if !follow {
		return a.replay(ctx, b, from, emit, idle)
	}
	done := make(chan error, 1)
	a.follow(ctx, b.ID, from, emit, idle, func(err error) { done <- err })
	return <-done
}

// follow reads build id's log from offset from on as readLog does with
// follow, and calls done once the stream is over. It returns as soon as
// the stream has to wait: a follower that is waiting has no goroutine.
// The first stretch runs on the caller's goroutine; each later one on a
// goroutine of its own, started by whatever ends the wait (a commit, the
// keepalive's timer, the client leaving, a drain) and gone when the
// stream waits again. At thousands of followers a goroutine each, waiting
// with the stack its deepest call had grown, was half the server's memory.
//
// It calls idle whenever a keepalive interval has passed with nothing
// written: a filtered follower of a busy build is as silent as an idle
// one, and a proxy cuts both. The key the stream was opened with is
// checked about once a keepalive interval, so a revocation on another
// server sharing the store ends it too.
//
// Following needs no hand-over between replay and live: the reader only
// ever asks "what is at my offset?", of memory when memory holds it and of
// the store otherwise, and it registers with the hub before its first read,
// so a commit between a read and the wait still wakes it.
func (a *API) follow(ctx context.Context, id string, from uint64,
	emit func([]buildlog.Chunk) (bool, error), idle func() error, done func(error)) {
	now := time.Now()
	fl := &follower{a: a, ctx: ctx, id: id, pos: from, emit: emit, idle: idle, done: done,
		f: a.hub.Follow(id), checked: now, sent: now}
	fl.stopCtx = context.AfterFunc(ctx, fl.kick)
	fl.stopDrain = context.AfterFunc(a.drained, fl.kick)
	fl.run()
}

// follower is one follow stream's state between its stretches of work.
// Exactly one goroutine runs it at a time (state); what ends a wait calls
// kick, which starts one unless one is running, and then that one looks
// again before it stops (pending).
type follower struct {
	a    *API
	ctx  context.Context
	id   string
	emit func([]buildlog.Chunk) (bool, error)
	idle func() error
	done func(error)
	f    *live.Follower

	stopCtx, stopDrain func() bool
	timer              *time.Timer // the next keepalive; made at the first wait

	// Only the running goroutine touches these.
	pos     uint64
	woken   bool      // a wake-up came and brought nothing yet
	checked time.Time // the key's last check
	sent    time.Time // the last write or keepalive

	state   atomic.Int32 // followerRunning or followerWaiting
	pending atomic.Bool  // kicked while running: look again before waiting
	rang    atomic.Bool  // the hub's wake-up came
}

const (
	followerRunning int32 = iota
	followerWaiting
)

func (fl *follower) run() {
	for {
		if err, over := fl.step(); over {
			fl.finish(err)
			return
		}
		fl.state.Store(followerWaiting)
		if !fl.pending.Swap(false) || !fl.state.CompareAndSwap(followerWaiting, followerRunning) {
			return // nothing came since step looked, or another goroutine runs it now
		}
	}
}

// kick ends a wait: there may be something to do. It runs the stream on
// the calling goroutine: timers and context.AfterFunc call it on one of
// their own.
func (fl *follower) kick() {
	fl.pending.Store(true)
	if fl.state.CompareAndSwap(followerWaiting, followerRunning) {
		fl.run()
	}
}

// onWake is the hub's call at a wake-up, made on the committer's
// goroutine: the stream goes on from the API's run queue.
func (fl *follower) onWake() {
	fl.rang.Store(true)
	fl.pending.Store(true)
	if fl.state.CompareAndSwap(followerWaiting, followerRunning) {
		fl.a.runq.push(fl)
	}
}

func (fl *follower) finish(err error) {
	fl.stopCtx()
	fl.stopDrain()
	if fl.timer != nil {
		fl.timer.Stop()
	}
	fl.f.Close()
	fl.done(err)
}

// step works until the stream is over (over true; err why, if it failed)
// or has to wait, in which case it has asked for a kick at the next
// commit and at the next keepalive.
func (fl *follower) step() (err error, over bool) {
	a := fl.a
	for {
		if fl.ctx.Err() != nil || a.drained.Err() != nil {
			return nil, true
		}
		if fl.rang.Swap(false) {
			fl.woken = true
		}
		wake := fl.f.Wait()
		// complete: what was read reaches the log's end as of wake, so
		// after sending it the reader may wait on wake without asking
		// again. Memory holds every commit published before wake was
		// taken; a store read is complete under both of its bounds.
		chunks, complete := fl.f.Read(fl.pos)
		if !complete {
			if chunks, err = a.reads.read(fl.ctx, a.cfg.Store, fl.id, fl.pos, wake); err != nil {
				return err, true
			}
			complete = len(chunks) < buildlog.MaxReadChunks && size(chunks) < readPage
		}
		if chunks = trim(chunks, fl.pos, ^uint64(0)); len(chunks) > 0 {
			if a.cfg.Metrics != nil {
				n := 0
				for _, c := range chunks {
					n += c.Count
				}
				a.cfg.Metrics.FollowerLag(n)
			}
			wrote, err := fl.emit(chunks)
			if err != nil {
				return err, true
			}
			// A busy stream never idles, so it checks its key here.
			if time.Since(fl.checked) >= a.cfg.Keepalive {
				if a.revoked(fl.ctx) {
					return nil, true
				}
				fl.checked = time.Now()
			}
			last := chunks[len(chunks)-1]
			if last.Terminal {
				return nil, true
			}
			fl.pos = last.End()
			if wrote {
				fl.sent = time.Now()
			}
			fl.woken = false
			if !complete {
				// Catching up through a long log the filter drops: a
				// keepalive may be due before the end.
				if stop, err := fl.keepalive(); stop {
					return err, true
				}
				continue
			}
			// Wait on the same wake: one already closed by a commit since
			// returns at once. Asking the store "anything new?" after every
			// send instead cost each follower a query per commit.
		}
		if fl.woken {
			// Woken with nothing at our offset: a reader who started past
			// the end is still waiting; if the build has ended short of
			// it, nothing will ever come.
			cur, err := a.reads.status(fl.ctx, a.cfg.Store, fl.id, wake)
			if err != nil {
				return err, true
			}
			if cur.Status.Terminal() && fl.pos >= cur.NextOffset {
				return nil, true
			}
		}
		if stop, err := fl.keepalive(); stop {
			return err, true
		}
		if !fl.f.OnWake(wake, fl.onWake) {
			fl.woken = true // a commit came since wake was taken
			continue
		}
		next := time.Until(fl.sent.Add(a.cfg.Keepalive))
		if fl.timer == nil {
			fl.timer = time.AfterFunc(next, fl.kick)
		} else {
			fl.timer.Reset(next)
		}
		return nil, false
	}
}

// keepalive sends one if an interval has passed with nothing written; it
// is also the only key check of a stream that writes nothing. stop means
// the stream is over: the key has been revoked (err nil), or the write
// failed.
func (fl *follower) keepalive() (stop bool, err error) {
	if time.Since(fl.sent) < fl.a.cfg.Keepalive {
		return false, nil
	}
	if fl.a.revoked(fl.ctx) {
		return true, nil
	}
	fl.checked = time.Now()
	if err := fl.idle(); err != nil {
		return true, err
	}
	fl.sent = time.Now()
	return false, nil
}

// replay emits the log from offset from up to the build's NextOffset as
// read. Past the first page it reads the next page while the previous one
// is sent: on a long replay the one goroutine that read, framed and wrote
// in turn kept one core busy while the other waited. idle, when not nil,
// is called between pages once a keepalive interval has passed with
// nothing written, as a filter that matches nothing in a long log does.
func (a *API) replay(ctx context.Context, b *buildlog.Build, from uint64,
	emit func([]buildlog.Chunk) (bool, error), idle func() error) error {
	read := func(pos uint64) ([]buildlog.Chunk, error) {
		chunks, err := a.cfg.Store.ReadLog(ctx, b.ID, pos, readPage)
		return trim(chunks, pos, b.NextOffset), err
	}
	if from >= b.NextOffset {
		return nil
	}
	chunks, err := read(from)
	if err != nil || len(chunks) == 0 {
		return err
	}
	pos := chunks[len(chunks)-1].End()
	if pos >= b.NextOffset {
		_, err := emit(chunks) // the common case: a log that fits one page
		return err
	}

	type page struct {
		chunks []buildlog.Chunk
		err    error
	}
	ctx, cancel := context.WithCancel(ctx)
	pages := make(chan page, 1)
	done := make(chan struct{})
	defer func() {
		cancel()
		<-done // the reader never outlives the request
	}()
	go func() {
		defer close(done)
		defer close(pages)
		for pos < b.NextOffset {
			chunks, err := read(pos)
			select {
			case pages <- page{chunks, err}:
			case <-ctx.Done():
				return
			}
			if err != nil || len(chunks) == 0 {
				return
			}
			pos = chunks[len(chunks)-1].End()
		}
	}()
	lastWrite := time.Now()
	send := func(chunks []buildlog.Chunk) error {
		wrote, err := emit(chunks)
		switch {
		case err != nil:
			return err
		case wrote:
			lastWrite = time.Now()
		case idle != nil && time.Since(lastWrite) >= a.cfg.Keepalive:
			lastWrite = time.Now()
			return idle()
		}
		return nil
	}
	if err := send(chunks); err != nil {
		return err
	}
	for p := range pages {
		if p.err != nil || len(p.chunks) == 0 {
			return p.err
		}
		if err := send(p.chunks); err != nil {
			return err
		}
	}
	return nil
}

// trim cuts chunks to offsets [from, until).
func trim(chunks []buildlog.Chunk, from, until uint64) []buildlog.Chunk {
	for len(chunks) > 0 && chunks[0].End() <= from {
		chunks = chunks[1:]
	}
	if len(chunks) > 0 && chunks[0].First < from {
		chunks[0] = chunks[0].From(from)
	}
	n := 0
	for n < len(chunks) && chunks[n].First < until {
		n++
	}
	return chunks[:n]
}

// startOffset is where a read begins: offset, else cursor, else one past
// Last-Event-ID, else 0. Each is attacker-controlled and parsed strictly.
func startOffset(r *http.Request) (uint64, error) {
	q := r.URL.Query()
	for _, name := range []string{"offset", "cursor"} {
		if q.Has(name) {
			return parseOffset(name, q.Get(name))
		}
	}
	if h := r.Header.Get("Last-Event-ID"); h != "" {
		n, err := parseOffset("Last-Event-ID", h)
		if err != nil {
			return 0, err
		}
		if n == ^uint64(0) {
			return 0, buildlog.Errorf(buildlog.EInvalid, "Last-Event-ID: out of range")
		}
		return n + 1, nil
	}
	return 0, nil
}

func parseOffset(name, s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, buildlog.Errorf(buildlog.EInvalid, "%s: want an offset, an unsigned integer, got %q", name, clipHeader(s))
	}
	return n, nil
}

func parseBool(r *http.Request, name string, def bool) (bool, error) {
	q := r.URL.Query()
	if !q.Has(name) {
		return def, nil
	}
	switch q.Get(name) {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, buildlog.Errorf(buildlog.EInvalid, "%s: want true or false, got %q", name, clipHeader(q.Get(name)))
}

func size(chunks []buildlog.Chunk) int {
	n := 0
	for _, c := range chunks {
		n += len(c.Data)
	}
	return n
}
