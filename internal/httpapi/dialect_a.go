package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"buildlog"
)

// form is how dialect A renders a build's entries, chosen by Accept.
type form int

const (
	formSSE    form = iota // text/event-stream: the seed's form and the default
	formNDJSON             // application/x-ndjson: the same entries, one per line
	formJSON               // application/json: one page of entries
)

// negotiate picks the form Accept prefers (highest q, then first listed);
// anything else, */* included, gets the seed's event stream, so clients
// that send no particular Accept (curl, requests, EventSource) get SSE.
func negotiate(accept string) form {
	best, bestQ := formSSE, 0.0
	for _, part := range strings.Split(accept, ",") {
		mt, params, _ := strings.Cut(part, ";")
		var f form
		switch strings.ToLower(strings.TrimSpace(mt)) {
		case "text/event-stream":
			f = formSSE
		case "application/x-ndjson", "application/ndjson":
			f = formNDJSON
		case "application/json":
			f = formJSON
		default:
			continue
		}
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			k, v, ok := strings.Cut(p, "=")
			if ok && strings.TrimSpace(k) == "q" {
				if n, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					q = n
				}
			}
		}
		if q > bestQ {
			best, bestQ = f, q
		}
	}
	return best
}

// Page limits of the JSON form.
const (
	defaultPageLimit = 1000
	maxPageLimit     = 10000
	// maxPageScan bounds the entries one filtered page examines, so a rare
	// match in a huge log cannot make one request read all of it.
	maxPageScan = 100000
)

// aQuery is a dialect A request, parsed and validated before anything is read.
type aQuery struct {
	from     uint64 // from offset, cursor or Last-Event-ID
	explicit bool   // one of those was given
	tail     uint64
	hasTail  bool
	follow   bool
	limit    int
	filter   filter
	form     form
}

func parseAQuery(r *http.Request) (*aQuery, error) {
	if err := checkQuery(r); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	aq := &aQuery{limit: defaultPageLimit, form: negotiate(r.Header.Get("Accept"))}
	var err error
	if aq.from, err = startOffset(r); err != nil {
		return nil, err
	}
	aq.explicit = q.Has("offset") || q.Has("cursor") || r.Header.Get("Last-Event-ID") != ""
	if aq.follow, err = parseBool(r, "follow", false); err != nil {
		return nil, err
	}
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > maxPageLimit {
			return nil, buildlog.Errorf(buildlog.EInvalid, "limit: want an integer from 1 to %d, got %q", maxPageLimit, clipHeader(q.Get("limit")))
		}
		aq.limit = n
	}
	if q.Has("tail") {
		if q.Has("offset") || q.Has("cursor") {
			return nil, buildlog.Errorf(buildlog.EInvalid, "tail: give tail or offset/cursor, not both")
		}
		n, err := strconv.ParseUint(q.Get("tail"), 10, 64)
		if err != nil {
			return nil, buildlog.Errorf(buildlog.EInvalid, "tail: want a number of entries, an unsigned integer, got %q", clipHeader(q.Get("tail")))
		}
		aq.tail, aq.hasTail = n, true
	}
	if aq.filter, err = parseFilter(r); err != nil {
		return nil, err
	}
	return aq, nil
}

// start is where the read begins in b. A reconnect's Last-Event-ID wins
// over tail, which is resolved against the log's end at request time, so
// an EventSource opened with ?tail=N resumes where it was rather than
// jumping to a new tail.
func (q *aQuery) start(b *buildlog.Build) uint64 {
	if q.explicit || !q.hasTail {
		return q.from
	}
	return b.NextOffset - min(q.tail, b.NextOffset)
}

// streamLogs is dialect A: GET /v1/templates/builds/{build_id}/logs, one
// `log` event per entry, id = offset; or NDJSON, or one JSON page.
func (a *API) streamLogs(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("build_id")
	p, err := a.authenticate(r, buildlog.ScopeRead, id)
	if err != nil {
		return err
	}
	q, err := parseAQuery(r)
	if err != nil {
		return err
	}
	b, err := a.build(r, p, id)
	if err != nil {
		return err
	}
	from := q.start(b)
	if q.form == formJSON {
		return a.logPage(w, r, b, from, q)
	}
	contentType := "text/event-stream; charset=utf-8"
	if q.form == formNDJSON {
		contentType = "application/x-ndjson"
	}
	s, release, err := a.begin(w, p, b, from, contentType)
	if s == nil {
		return err
	}

	var (
		frame     func(off uint64, line []byte)
		keepalive func() error
	)
	if q.form == formNDJSON {
		frame = func(_ uint64, line []byte) {
			s.grab()
			s.buf = append(append(s.buf, line...), '\n')
		}
		// NDJSON has no comments; a blank line is what parsers skip.
		keepalive = func() error {
			s.grab()
			s.buf = append(s.buf, '\n')
			return s.flush()
		}
	} else {
		frame = func(off uint64, line []byte) { s.sseFrame(off, "log", line) }
		keepalive = s.sseKeepalive
	}
	shared := frameSSE
	if q.form == formNDJSON {
		shared = frameNDJSON
	}
	bid := b.ID // what emit keeps of the build: a follower holds it for hours
	emit := func(chunks []buildlog.Chunk) (wrote bool, err error) {
		if !q.filter.active() && shareable(chunks) {
			// Every follower of the build at this offset sends the same
			// bytes: render them once.
			k := frameKey{build: bid, from: chunks[0].First, to: chunks[len(chunks)-1].End(), form: shared}
			out, err := a.frames.get(k, func() ([]byte, error) { return renderA(chunks, shared), nil })
			if err != nil {
				return false, err
			}
			return true, s.writeShared(out)
		}
		for _, c := range chunks {
			c.Lines(func(off uint64, line []byte) bool {
				if !q.filter.keep(c, off, line) {
					return true
				}
				frame(off, line)
				wrote = true
				err = s.maybeFlush()
				return err == nil
			})
			if err != nil {
				return wrote, err
			}
		}
		if !wrote {
			return false, nil
		}
		return true, s.flush()
	}
	a.stream(r, release, b, from, q.follow, emit, keepalive)
	return nil
}

// renderA is what an unfiltered dialect A stream sends for chunks.
func renderA(chunks []buildlog.Chunk, form frameForm) []byte {
	n := size(chunks)
	for _, c := range chunks {
		if form == frameSSE {
			n += 48 * c.Count // "id: …\nevent: log\ndata: …\n\n"
		} else {
			n += c.Count
		}
	}
	out := make([]byte, 0, n)
	for _, c := range chunks {
		c.Lines(func(off uint64, line []byte) bool {
			if form == frameSSE {
				out = appendSSE(out, off, "log", line)
			} else {
				out = append(append(out, line...), '\n')
			}
			return true
		})
	}
	return out
}

// logPage is dialect A's JSON form: {"entries":[...],"next_offset":N,"done":B}.
// Entries are the stored lines as they are; the page is written as it is
// read, so a 10,000-entry page of long messages never sits in memory.
// next_offset is the offset after the last entry examined (filtered out or
// not), so continuing from it never skips or repeats an entry; done says
// the build is finished and the page reached its terminal entry.
func (a *API) logPage(w http.ResponseWriter, r *http.Request, b *buildlog.Build, from uint64, q *aQuery) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	s := &streamWriter{w: w, rc: http.NewResponseController(w), buf: make([]byte, 0, 8<<10)}
	s.buf = append(s.buf, `{"entries":[`...)
	next, n, examined, sent := from, 0, 0, false
	var writeErr error
	err := a.scanLog(r.Context(), b, from, func(c buildlog.Chunk, off uint64, line []byte) bool {
		next = off + 1
		examined++
		if q.filter.keep(c, off, line) {
			if n > 0 {
				s.buf = append(s.buf, ',')
			}
			s.buf = append(s.buf, line...)
			n++
			if len(s.buf) >= flushAt {
				sent = true
				if writeErr = s.flush(); writeErr != nil {
					return false
				}
			}
		}
		return n < q.limit && examined < maxPageScan
	})
	if err == nil {
		// The client is gone or stalled: the rest of the page would only
		// fail too, and a page cut short must not end as if whole.
		err = writeErr
	}
	if err != nil {
		if !sent {
			return err // nothing written yet: a proper error reply
		}
		a.streamEnded(r, err)
		return nil
	}
	done := b.Status.Terminal() && next >= b.NextOffset
	s.buf = append(s.buf, `],"next_offset":`...)
	s.buf = strconv.AppendUint(s.buf, next, 10)
	s.buf = append(s.buf, `,"done":`...)
	s.buf = strconv.AppendBool(s.buf, done)
	s.buf = append(s.buf, "}\n"...)
	if err := s.flush(); err != nil {
		a.streamEnded(r, err)
	}
	return nil
}

var errStopScan = errors.New("scan stopped")

// scanLog calls fn with each entry stored from offset from up to the end
// of the log as b records it, in offset order, through the one ordered
// reader, until fn returns false.
func (a *API) scanLog(ctx context.Context, b *buildlog.Build, from uint64,
	fn func(c buildlog.Chunk, off uint64, line []byte) bool) error {
	// Reports nothing written: fn's caller writes, and a page is not kept
	// alive.
	err := a.readLog(ctx, b, from, false, func(chunks []buildlog.Chunk) (bool, error) {
		for _, c := range chunks {
			stop := false
			c.Lines(func(off uint64, line []byte) bool {
				stop = !fn(c, off, line)
				return !stop
			})
			if stop {
				return false, errStopScan
			}
		}
		return false, nil
	}, nil)
	if errors.Is(err, errStopScan) {
		return nil
	}
	return err
}

// streamEnded logs why a stream stopped early. Headers are sent, so the
// client learns only that the stream ended; it reconnects by offset.
// stream sends b's log from offset from through emit (see readLog), then
// calls release. On a detached connection a follow stream goes on after
// the handler has returned, with no goroutine of its own while it waits
// (see follow). Nothing of the stream holds r past this call: for a
// follower, the request and its headers would be a kilobyte kept for hours.
func (a *API) stream(r *http.Request, release func(), b *buildlog.Build, from uint64, follow bool,
	emit func([]buildlog.Chunk) (bool, error), idle func() error) {
	ctx, path := r.Context(), r.URL.Path
	ended := func(err error) {
		if err != nil {
			a.streamEndedAt(ctx, path, err)
		}
		release()
	}
	if st := stateOf(r); follow && st != nil && st.detached {
		id := b.ID
		st.later = func(end func()) {
			a.follow(ctx, id, from, emit, idle, func(err error) {
				ended(err)
				end()
			})
		}
		return
	}
	ended(a.readLog(ctx, b, from, follow, emit, idle))
}

func (a *API) streamEnded(r *http.Request, err error) {
	a.streamEndedAt(r.Context(), r.URL.Path, err)
}

func (a *API) streamEndedAt(ctx context.Context, path string, err error) {
	if ctx.Err() != nil {
		return
	}
	a.log.Warn("stream ended early", "path", path, "err", err)
}
