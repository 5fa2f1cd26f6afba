package httpapi

import (
	"buildlog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// streamWriteTimeout bounds one write to a stream. A reader that stops
// reading for this long is disconnected (it reconnects and resumes by
// offset); until then it holds only its own goroutine and socket buffers,
// never the producer or other readers. Atomic only so tests may shorten it.
var streamWriteTimeout atomic.Int64

func init() { streamWriteTimeout.Store(int64(30 * time.Second)) }

// flushAt is how many buffered bytes make a stream write out mid-batch.
const flushAt = 64 << 10

// streamWriter buffers frames and writes them with a per-write deadline.
// The server sets no WriteTimeout (it would cut long streams), so every
// write here sets its own.
//
// The buffer is borrowed from bufPool for a write and given back by flush:
// a follower spends nearly all its life waiting, and a buffer held through
// the wait was measured at 9 KiB of the ~22 KiB each follower cost.
type streamWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	buf []byte // nil between writes
	// deadlineSet is when the write deadline was last moved. It moves at
	// most every tenth of the timeout (a stalled client is then cut
	// between 0.9 and 1 timeout after its last write went through): moving
	// a runtime timer at every write cost followers a tenth of their CPU.
	deadlineSet time.Time
}

// deadline keeps the connection's write deadline a timeout ahead.
func (s *streamWriter) deadline() {
	timeout := time.Duration(streamWriteTimeout.Load())
	now := time.Now()
	if now.Sub(s.deadlineSet) < timeout/10 {
		return
	}
	s.deadlineSet = now
	s.rc.SetWriteDeadline(now.Add(timeout))
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// grab makes s.buf a pooled buffer if it has none. Appending to a nil
// buffer is still correct, only slower.
func (s *streamWriter) grab() {
	if s.buf == nil {
		s.buf = (*bufPool.Get().(*[]byte))[:0]
	}
}

// release gives the buffer back, unless it grew unusually large.
func (s *streamWriter) release() {
	if s.buf != nil && cap(s.buf) <= 4*flushAt {
		b := s.buf[:0]
		bufPool.Put(&b)
	}
	s.buf = nil
}

// begin opens a stream of b from offset from for p, as both streaming
// dialects do: 204 No Content and a nil writer when the build has ended and
// nothing will ever come, which is what stops an EventSource from
// reconnecting forever; otherwise a stream slot within the limits (429
// past them), the headers and, for an event stream, its reconnect delay.
// release gives the slot back. A nil writer with a nil error also means
// the client left before the stream began.
func (a *API) begin(w http.ResponseWriter, p *principal, b *buildlog.Build, from uint64, contentType string) (s *streamWriter, release func(), err error) {
	if b.Status.Terminal() && from >= b.NextOffset {
		w.WriteHeader(http.StatusNoContent)
		return nil, nil, nil
	}
	if release, err = a.openStream(p); err != nil {
		return nil, nil, err
	}
	s = startStream(w, contentType)
	if strings.HasPrefix(contentType, "text/event-stream") {
		if err := s.sseRetry(); err != nil {
			release()
			return nil, nil, nil
		}
	}
	return s, release, nil
}

func startStream(w http.ResponseWriter, contentType string) *streamWriter {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx and friends: do not buffer
	w.WriteHeader(http.StatusOK)
	return &streamWriter{w: w, rc: http.NewResponseController(w)}
}

// flush writes what is buffered and pushes it to the client.
func (s *streamWriter) flush() error {
	s.deadline()
	var err error
	if len(s.buf) > 0 {
		_, err = s.w.Write(s.buf) // copies: the buffer may go back at once
	}
	s.release()
	if err != nil {
		return err
	}
	return s.rc.Flush()
}

// writeShared writes b, bytes shared with other streams, after whatever is
// buffered, and pushes it to the client: the rendering goes to the
// connection without a copy of the stream's own.
func (s *streamWriter) writeShared(b []byte) error {
	if len(s.buf) > 0 {
		if err := s.flush(); err != nil {
			return err
		}
	}
	s.deadline()
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}

// maybeFlush writes once enough is buffered, keeping memory per stream bounded.
func (s *streamWriter) maybeFlush() error {
	if len(s.buf) >= flushAt {
		return s.flush()
	}
	return nil
}

// sseRetry starts an event stream: the reconnect delay, with jitter so
// that the clients of a restarted server do not all return at once.
func (s *streamWriter) sseRetry() error {
	ms := 2000 + rand.IntN(1000)
	s.grab()
	s.buf = append(s.buf, "retry: "...)
	s.buf = strconv.AppendInt(s.buf, int64(ms), 10)
	s.buf = append(s.buf, "\n\n"...)
	return s.flush()
}

// sseKeepalive is a comment, ignored by clients, that keeps proxies from
// closing an idle stream.
func (s *streamWriter) sseKeepalive() error {
	s.grab()
	s.buf = append(s.buf, ": keepalive\n\n"...)
	return s.flush()
}

// sseFrame appends one event: id, optional event type, one data line.
func (s *streamWriter) sseFrame(id uint64, event string, data []byte) {
	s.grab()
	s.buf = appendSSE(s.buf, id, event, data)
}

func appendSSE(dst []byte, id uint64, event string, data []byte) []byte {
	dst = append(dst, "id: "...)
	dst = strconv.AppendUint(dst, id, 10)
	if event != "" {
		dst = append(dst, "\nevent: "...)
		dst = append(dst, event...)
	}
	dst = append(dst, "\ndata: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}
