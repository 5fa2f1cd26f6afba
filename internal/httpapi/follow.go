package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"buildlog"
)

// readPage is how many bytes of log one store read fetches; a replay of any
// length streams page by page, so memory per reader stays bounded.
const readPage = 1 << 20

// readLog is the one ordered reader of a build's log that every dialect is
// a view of. It calls emit with the log's chunks from offset from on, in
// offset order, the first trimmed to start at from; emit reports whether it
// wrote anything (a filter may drop every entry). Without follow it stops
// at the log's end as of the call. With follow it then waits for commits
// until it has emitted the terminal chunk, calling idle whenever a
// keepalive interval has passed with nothing written: a filtered follower
// of a busy build is as silent as an idle one, and a proxy cuts both. It returns nil when done or when the client or a drain ends it,
// or when the key it was opened with has been revoked (checked about once
// a keepalive interval, so a revocation on another server sharing the store
// ends it too).
//
// Following needs no hand-over between replay and live: the reader only
// ever asks "what is at my offset?", of memory when memory holds it and of
// the store otherwise, and it registers with the hub before its first read,
// so a commit between a read and the wait still wakes it.
func (a *API) readLog(ctx context.Context, b *buildlog.Build, from uint64, follow bool,
	emit func([]buildlog.Chunk) (wrote bool, err error), idle func() error) error {
	pos := from
	if !follow {
		return a.replay(ctx, b, from, emit, idle)
	}

	f := a.hub.Follow(b.ID)
	defer f.Close()
	keepalive := time.NewTimer(a.cfg.Keepalive)
	defer keepalive.Stop()
	woken := false
	checked := time.Now()
	// ping is the keepalive; it is also the only key check of a stream
	// that writes nothing. stop means the key has been revoked.
	ping := func() (stop bool, err error) {
		if a.revoked(ctx) {
			return true, nil
		}
		checked = time.Now()
		if err := idle(); err != nil {
			return true, err
		}
		keepalive.Reset(a.cfg.Keepalive)
		return false, nil
	}
	for {
		wake := f.Wait()
		// complete: what was read reaches the log's end as of wake, so
		// after sending it the reader may wait on wake without asking
		// again. Memory holds every commit published before wake was
		// taken; a store read is complete under both of its bounds.
		chunks, complete := f.Read(pos)
		if !complete {
			var err error
			if chunks, err = a.reads.read(ctx, a.cfg.Store, b.ID, pos, wake); err != nil {
				return err
			}
			complete = len(chunks) < buildlog.MaxReadChunks && size(chunks) < readPage
		}
		if chunks = trim(chunks, pos, ^uint64(0)); len(chunks) > 0 {
			if a.cfg.Metrics != nil {
				n := 0
				for _, c := range chunks {
					n += c.Count
				}
				a.cfg.Metrics.FollowerLag(n)
			}
			wrote, err := emit(chunks)
			if err != nil {
				return err
			}
			// A busy stream never idles, so it checks its key here.
			if time.Since(checked) >= a.cfg.Keepalive {
				if a.revoked(ctx) {
					return nil
				}
				checked = time.Now()
			}
			last := chunks[len(chunks)-1]
			if last.Terminal {
				return nil
			}
			pos = last.End()
			if wrote {
				keepalive.Reset(a.cfg.Keepalive)
			}
			woken = false
			if !complete {
				// Catching up through a long log the filter drops: the
				// select below is not reached until the end.
				select {
				case <-keepalive.C:
					if stop, err := ping(); stop {
						return err
					}
				default:
				}
				continue
			}
			// Wait on the same wake: one already closed by a commit since
			// returns at once. Asking the store "anything new?" after every
			// send instead cost each follower a query per commit.
		}
		if woken {
			// Woken with nothing at our offset: a reader who started past
			// the end is still waiting; if the build has ended short of
			// it, nothing will ever come.
			cur, err := a.reads.status(ctx, a.cfg.Store, b.ID, wake)
			if err != nil {
				return err
			}
			if cur.Status.Terminal() && pos >= cur.NextOffset {
				return nil
			}
		}
		select {
		case <-wake:
			woken = true
		case <-keepalive.C:
			if stop, err := ping(); stop {
				return err
			}
		case <-ctx.Done():
			return nil
		case <-a.drain:
			return nil
		}
	}
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
