package httpapi

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// A follower spends nearly all its life waiting, and net/http keeps a
// waiting response expensive: its connection's 4 KiB read and 4 KiB write
// buffers, the response's 2 KiB chunk buffer, a background reader, and the
// serving goroutine's stack, grown by everything the request did before it
// began to wait. Measured at 2,000 followers that was most of the ~42 KiB
// of server memory each cost. So a follow stream takes its connection over
// (Hijack) before its handler runs and serves the request through a small
// ResponseWriter of its own; the handler hands its stream to API.follow,
// which has no goroutine while it waits, and returns, and so does
// net/http's goroutine, dropping its buffers.
//
// What net/http did for those connections is done here: the response is
// framed (Content-Length when it ends before any flush, chunked after),
// every response says Connection: close because nothing reads the
// connection for a next request, a client that hangs up cancels the
// request's context (see hangups; elsewhere a one-byte read), write
// deadlines go to the connection, and API.Wait lets a shutdown wait for
// these streams as Server.Shutdown waits for its own.

// detachable reports whether r is a stream worth taking over: a GET that
// follows, on HTTP/1.x (an HTTP/2 stream cannot be hijacked, and costs far
// less anyway).
func detachable(pattern string, r *http.Request) bool {
	if r.ProtoMajor != 1 || r.Method != http.MethodGet {
		return false
	}
	switch pattern {
	case routeBuildEvents:
		return true // dialect B always follows
	case routeStreamLogs:
		f, err := parseBool(r, "follow", false)
		return err == nil && f
	}
	return false
}

// detach takes r's connection over. It returns nil when w cannot or
// should not be hijacked (see recorders; a test recorder): the request is
// then served in place, as any other. The request is to be served under
// the writer's ctx, which net/http's end of the request does not cancel.
func (a *API) detach(w http.ResponseWriter, r *http.Request) *detachedWriter {
	obs, ok := observers(w)
	if !ok {
		return nil
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil
	}
	// Nothing was written, so brw's writer is empty; its reader may hold a
	// pipelined request, which a connection that closes after this
	// response never serves.
	_ = brw
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	d := &detachedWriter{
		conn:   conn,
		header: w.Header().Clone(), // what middleware set (X-Request-Id)
		proto:  r.Proto,
		obs:    obs,
		ctx:    ctx,
		cancel: cancel,
	}
	for _, o := range obs {
		o.ObserveDetach()
	}
	a.detachedMu.Lock()
	if a.detachedConns == nil {
		a.detachedConns = make(map[net.Conn]struct{})
	}
	a.detachedConns[conn] = struct{}{}
	a.detachedMu.Unlock()
	a.detached.Add(1)
	if stop, ok := connHangups.watch(conn, cancel); ok {
		d.unwatch = stop
	} else {
		d.gone = make(chan struct{})
		go d.watch()
	}
	return d
}

// undetach forgets an ended stream's connection.
func (a *API) undetach(d *detachedWriter) {
	a.detachedMu.Lock()
	delete(a.detachedConns, d.conn)
	a.detachedMu.Unlock()
	a.detached.Done()
}

// CloseStreams cuts the connection of every stream that took its
// connection over, at once, as http.Server.Close does for the others.
func (a *API) CloseStreams() {
	a.detachedMu.Lock()
	defer a.detachedMu.Unlock()
	for c := range a.detachedConns {
		c.Close()
	}
}

// An Observer is a ResponseWriter wrapper that only watches the response
// (StatusRecorder, a test's document checker). A follow stream takes its
// connection over from under observers only, and tells them what it sends;
// any other wrapper may change the body (compress, rewrite), and a hijacked
// connection would bypass it, so such a stream is served in place.
type Observer interface {
	http.ResponseWriter
	Unwrap() http.ResponseWriter
	// ObserveDetach says the response will be sent from under the
	// observer, after its ServeHTTP has returned. The observer is to let
	// go of the writer it wraps: that writer holds net/http's buffers for
	// the connection, and the observer lives as long as the stream.
	ObserveDetach()
	// ObserveHeader is the status and headers, once, before any body.
	ObserveHeader(status int, h http.Header)
	// ObserveBody is the body's next bytes, to read only while called.
	ObserveBody(p []byte)
	// ObserveEnd says the response is complete.
	ObserveEnd()
}

// observers are the Observers wrapping w, outermost first; ok is false
// when another wrapper is in the chain.
func observers(w http.ResponseWriter) (obs []Observer, ok bool) {
	for {
		u, unwraps := w.(interface{ Unwrap() http.ResponseWriter })
		if !unwraps {
			return obs, true // net/http's own response
		}
		o, isObs := w.(Observer)
		if !isObs {
			return nil, false
		}
		obs = append(obs, o)
		w = u.Unwrap()
	}
}

// Wait waits until every stream that took its connection over has ended,
// or ctx ends. Call it after Drain, beside http.Server.Shutdown, which does
// not know of them.
func (a *API) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		a.detached.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// detachedWriter is an http.ResponseWriter on a hijacked HTTP/1.x
// connection.
type detachedWriter struct {
	conn   net.Conn
	header http.Header
	proto  string
	obs    []Observer
	ctx    context.Context // the request's, ended by cancel: a hang-up, a write error, the end
	cancel context.CancelFunc
	// The client's hang-up cancels the request: connHangups watches for it
	// (unwatch ends that), or else watch, which closes gone on return.
	unwatch func()
	gone    chan struct{}

	mu      sync.Mutex // Write may race the end only through misuse; cheap insurance
	status  int
	sent    bool   // status line and headers written
	chunked bool   // body framed as chunks (HTTP/1.1, streamed)
	pending []byte // body written before the headers were sent
	err     error  // the first write error: the connection is done
}

// watch cancels the request when the client hangs up (or sends anything,
// which a stream's client never does). It holds one byte, not a buffer.
func (d *detachedWriter) watch() {
	defer close(d.gone)
	var b [1]byte
	for {
		if _, err := d.conn.Read(b[:]); err != nil {
			d.cancel()
			return
		}
	}
}

func (d *detachedWriter) Header() http.Header {
	if d.header == nil {
		d.header = http.Header{} // headers sent: changes are ignored, as net/http's are
	}
	return d.header
}

func (d *detachedWriter) WriteHeader(code int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.status == 0 && code >= 200 {
		d.status = code
	}
}

func (d *detachedWriter) Write(b []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.status == 0 {
		d.status = http.StatusOK
	}
	if d.err != nil {
		return 0, d.err
	}
	if !d.sent {
		if !bodyAllowed(d.status) {
			return 0, http.ErrBodyNotAllowed
		}
		d.pending = append(d.pending, b...)
		return len(b), nil
	}
	if len(b) == 0 {
		return 0, nil
	}
	if err := d.writeBody(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Flush sends the headers, if not yet sent, and whatever was written.
func (d *detachedWriter) Flush() { d.FlushError() }

// FlushError is what http.ResponseController.Flush calls.
func (d *detachedWriter) FlushError() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return d.err
	}
	if !d.sent {
		if d.status == 0 {
			d.status = http.StatusOK
		}
		d.sendHeaders(-1)
		pending := d.pending
		d.pending = nil
		if len(pending) > 0 && d.err == nil {
			d.writeBody(pending)
		}
	}
	return d.err
}

// SetWriteDeadline is what http.ResponseController.SetWriteDeadline calls.
func (d *detachedWriter) SetWriteDeadline(t time.Time) error { return d.conn.SetWriteDeadline(t) }

// end completes the response and closes the connection, once the handler
// has returned, and tells the recorders.
func (d *detachedWriter) end() {
	d.mu.Lock()
	if d.status == 0 {
		d.status = http.StatusOK
	}
	if !d.sent {
		n := len(d.pending)
		if !bodyAllowed(d.status) {
			n = -2
		}
		d.sendHeaders(n)
		if len(d.pending) > 0 && d.err == nil {
			d.writeBody(d.pending)
		}
		d.pending = nil
	} else if d.chunked && d.err == nil {
		_, d.err = d.conn.Write([]byte("0\r\n\r\n"))
	}
	d.mu.Unlock()
	// Half-close first so the client reads every byte before it sees the
	// end; closing with unread input could reset the connection instead.
	if tc, ok := d.conn.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	}
	if d.unwatch != nil {
		d.unwatch()
	}
	d.conn.Close()
	if d.gone != nil {
		<-d.gone
	}
	d.cancel()
	for _, o := range d.obs {
		o.ObserveEnd()
	}
}

// sendHeaders writes the status line and headers. length is the body's
// length when known, -1 for a streamed body, -2 for none.
func (d *detachedWriter) sendHeaders(length int) {
	d.sent = true
	h := d.header
	h.Del("Transfer-Encoding")
	h.Del("Content-Length")
	h.Set("Connection", "close")
	switch {
	case length >= 0:
		h.Set("Content-Length", strconv.Itoa(length))
	case length == -1 && d.proto == "HTTP/1.1":
		h.Set("Transfer-Encoding", "chunked")
		d.chunked = true
	}
	if h.Get("Date") == "" {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	if length == -1 && h.Get("Content-Type") == "" {
		h.Set("Content-Type", "text/plain; charset=utf-8")
	}
	bw := bufio.NewWriterSize(d.conn, 512)
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(d.status))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(d.status))
	bw.WriteString("\r\n")
	h.Write(bw)
	bw.WriteString("\r\n")
	d.err = bw.Flush()
	for _, o := range d.obs {
		o.ObserveHeader(d.status, h)
	}
	// The map is spent, and a stream lives for hours: let it go.
	d.header = nil
}

// writeBody writes b as the body's next bytes: one chunk in one write
// when chunked.
func (d *detachedWriter) writeBody(b []byte) error {
	for _, o := range d.obs {
		o.ObserveBody(b)
	}
	var err error
	if d.chunked {
		var head [18]byte
		h := strconv.AppendInt(head[:0], int64(len(b)), 16)
		h = append(h, '\r', '\n')
		bufs := net.Buffers{h, b, crlf}
		_, err = bufs.WriteTo(d.conn)
	} else {
		_, err = d.conn.Write(b)
	}
	if err != nil {
		// A stalled or vanished client: the stream is over.
		d.err = err
		d.cancel()
	}
	return err
}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified && (status < 100 || status > 199)
}

var crlf = []byte("\r\n")
