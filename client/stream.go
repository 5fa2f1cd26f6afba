package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"buildlog"
	"buildlog/internal/sse"
)

// StreamOptions say which entries Stream yields and how it reconnects.
type StreamOptions struct {
	// From is the first offset to read.
	From uint64
	// Tail, when > 0, starts that many entries before the end of the log
	// as it is when Stream starts (From is then ignored); when < 0, starts
	// at the end, so only entries appended later are yielded.
	Tail int
	// Follow keeps the stream open for live entries until the build's
	// terminal entry; without it Stream yields what is stored and ends.
	Follow bool
	// Level, Kinds and Phases filter on the server (minimum level; any of
	// the kinds; any of the phases). The terminal entry always passes.
	Level  buildlog.Level
	Kinds  []buildlog.Kind
	Phases []string

	// MaxRetries is how many reconnects in a row may fail before Stream
	// gives up with the last error; 0 means until ctx ends.
	MaxRetries int
	// StallTimeout drops and reopens a connection that has carried nothing,
	// not even a keepalive comment, for this long: a server that vanished
	// without closing the socket. Default 45 s, three keepalive intervals.
	StallTimeout time.Duration
	// OnReconnect, when set, is called before each reconnect with why the
	// stream broke and how long Stream waits before reopening it.
	OnReconnect func(err error, wait time.Duration)
}

// ErrStreamEnded is the reason OnReconnect hears when a following stream
// ended cleanly before the build's terminal entry: the server is draining
// for a restart, or a proxy closed an idle connection.
var ErrStreamEnded = errors.New("the server ended the stream before the build finished")

// Stream reads a build's log over dialect A (server-sent events) as a Go
// 1.23 iterator of (entry, nil) pairs, in offset order:
//
//	for e, err := range c.Stream(ctx, id, client.StreamOptions{Follow: true}) {
//		if err != nil {
//			return err // the last pair: the stream failed for good
//		}
//		fmt.Println(e.Offset, e.Message)
//	}
//
// Whenever a connection drops, the server restarts or answers 429/5xx,
// Stream reopens it at the offset after the last entry it yielded, waiting
// by c.Backoff (with jitter) between attempts, so it never yields an entry
// twice nor skips one. The sequence ends after the terminal entry, when the
// server answers 204 (the build finished and nothing is left to read), or,
// without Follow, at the end of what was stored. It ends with one (zero
// entry, error) pair when the server refuses the request (not_found,
// unauthorized, ...), when it sends an entry this client cannot decode (a
// *DecodeError), when MaxRetries reconnects failed in a row, or with
// ctx.Err() when ctx ends. Breaking out of the loop closes the connection.
//
// Where the server's size cap dropped the middle of the log, Stream
// yields one omission notice in place of the dropped entries: an entry
// whose offset is the last one dropped, so offsets jump past the range and
// are still increasing (see OmissionOf, which tells a notice and what it
// stands for). A reconnect after a notice resumes after the range.
func (c *Client) Stream(ctx context.Context, buildID string, o StreamOptions) iter.Seq2[buildlog.Entry, error] {
	return func(yield func(buildlog.Entry, error) bool) {
		next := o.From
		if o.Tail != 0 {
			// Resolved once against the log's end, so a reconnect resumes
			// by offset instead of jumping to a newer tail.
			var b *buildlog.Build
			err := c.retryN(ctx, o.MaxRetries, func() (err error) { b, err = c.Build(ctx, buildID); return err })
			if err != nil {
				yield(buildlog.Entry{}, err)
				return
			}
			next = b.NextOffset
			if o.Tail > 0 {
				next -= min(uint64(o.Tail), b.NextOffset)
			}
		}
		if o.StallTimeout <= 0 {
			o.StallTimeout = 45 * time.Second
		}
		failures := 0
		for {
			s := streamOnce{c: c, buildID: buildID, o: &o, next: next, yield: yield}
			err := s.run(ctx)
			next = s.next
			switch {
			case s.stopped || s.done:
				return
			case ctx.Err() != nil:
				yield(buildlog.Entry{}, ctx.Err())
				return
			case err == nil && !o.Follow:
				return // all that was stored has been read
			case err != nil && !Retryable(err):
				yield(buildlog.Entry{}, err)
				return
			}
			if err == nil {
				err = ErrStreamEnded
			}
			if s.yielded > 0 {
				failures = 0
			}
			if o.MaxRetries > 0 && failures >= o.MaxRetries {
				yield(buildlog.Entry{}, err)
				return
			}
			d := c.Backoff.Delay(failures)
			if ra := retryAfter(err); ra > d {
				d = ra
			}
			failures++
			if o.OnReconnect != nil {
				o.OnReconnect(err, d)
			}
			if sleep(ctx, d) != nil {
				yield(buildlog.Entry{}, ctx.Err())
				return
			}
		}
	}
}

// DecodeError is a log event Stream could not decode as an entry: the
// server sent something this client does not understand. Resuming would
// meet the same event again, so it is not Retryable and Stream ends with it.
type DecodeError struct {
	ID  string // the event's id, the entry's offset as the server sent it
	Err error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("cannot decode the log entry of event id %q: %v", e.ID, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// streamOnce is one connection of a Stream.
type streamOnce struct {
	c       *Client
	buildID string
	o       *StreamOptions
	yield   func(buildlog.Entry, error) bool

	next    uint64 // offset after the last entry yielded
	yielded int
	done    bool // the terminal entry or a 204: nothing more will come
	stopped bool // the consumer broke out of its loop
}

func (s *streamOnce) path() string {
	q := url.Values{}
	q.Set("offset", strconv.FormatUint(s.next, 10))
	if s.o.Follow {
		q.Set("follow", "true")
	}
	if s.o.Level != "" {
		q.Set("level", string(s.o.Level))
	}
	if len(s.o.Kinds) > 0 {
		ks := make([]string, len(s.o.Kinds))
		for i, k := range s.o.Kinds {
			ks[i] = string(k)
		}
		q.Set("kind", strings.Join(ks, ","))
	}
	if len(s.o.Phases) > 0 {
		q.Set("phase", strings.Join(s.o.Phases, ","))
	}
	return "/v1/templates/builds/" + pathID(s.buildID) + "/logs?" + q.Encode()
}

// run reads one connection until it ends. nil means the server ended the
// stream cleanly; other errors say why it broke.
func (s *streamOnce) run(parent context.Context) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	req, err := s.c.newRequest(ctx, "GET", s.path(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	res, err := s.c.send(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusNoContent {
		s.done = true
		return nil
	}
	body := newStallReader(res.Body, s.o.StallTimeout, cancel)
	defer body.stop()
	r := sse.NewReader(body)
	for {
		ev, err := r.Next()
		if err != nil {
			if err == io.EOF {
				return nil
			}
			if parent.Err() != nil {
				return parent.Err()
			}
			if body.stalled() {
				err = fmt.Errorf("no data for %s", s.o.StallTimeout)
			}
			return &TransportError{URL: s.c.base, Err: err}
		}
		if ev.Type != "log" {
			continue
		}
		var e buildlog.Entry
		if err := json.Unmarshal(ev.Data, &e); err != nil {
			return &DecodeError{ID: ev.ID, Err: err}
		}
		if e.Offset < s.next {
			continue // already yielded: never twice
		}
		s.next = e.Offset + 1
		s.yielded++
		if !s.yield(e, nil) {
			s.stopped = true
			return nil
		}
		if e.Terminal() {
			s.done = true
			return nil
		}
	}
}

// stallReader cancels its connection when no bytes arrive for d.
type stallReader struct {
	r     io.Reader
	d     time.Duration
	timer *time.Timer
	mu    sync.Mutex
	fired bool
}

func newStallReader(r io.Reader, d time.Duration, cancel context.CancelFunc) *stallReader {
	s := &stallReader{r: r, d: d}
	s.timer = time.AfterFunc(d, func() {
		s.mu.Lock()
		s.fired = true
		s.mu.Unlock()
		cancel()
	})
	return s
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.timer.Reset(s.d)
	}
	return n, err
}

func (s *stallReader) stop() { s.timer.Stop() }

func (s *stallReader) stalled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fired
}
