package apicheck

import (
	"bytes"
	"io"
	"net/http"
)

// maxKept bounds the bytes of a JSON response kept for checking; a longer
// body is checked by its status only. A stream (SSE, NDJSON) is checked
// on its first maxStreamKept bytes, frame by frame: enough for what a
// functional test reads, and little enough that a hundred followers of a
// long log do not hold it all (the memory tests measure the heap).
const (
	maxKept       = 32 << 20
	maxStreamKept = 64 << 10
)

// Handler serves next, checking every exchange with Check once next has
// answered; report gets what is wrong (tests pass t.Error). Streams pass
// through as they are written, flushes included; a follow stream that
// takes its connection over from under the checker (it is an
// httpapi.Observer) is checked when it ends.
func (c *Checker) Handler(next http.Handler, report func(error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var reqBody []byte
		if r.Body != nil {
			reqBody, _ = io.ReadAll(r.Body)
			r.Body.Close()
			r.Body = io.NopCloser(bytes.NewReader(reqBody))
		}
		orig := r.Clone(r.Context())
		rec := &recorder{ResponseWriter: w}
		check := func(cut bool) {
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			x := &Exchange{Request: orig, RequestBody: reqBody, Status: status,
				Header: rec.header, Body: rec.body.Bytes(),
				Partial: !rec.stream && (rec.over || cut || rec.writeErr)}
			if x.Header == nil {
				x.Header = w.Header().Clone()
			}
			if err := c.Check(x); err != nil {
				report(err)
			}
		}
		rec.end = func() { check(false) }
		next.ServeHTTP(rec, r)
		if !rec.detached {
			check(r.Context().Err() != nil)
		}
	})
}

// recorder passes a response through, keeping a copy of it.
type recorder struct {
	http.ResponseWriter
	status   int
	header   http.Header // as sent with the status
	body     bytes.Buffer
	over     bool // more than maxKept
	stream   bool // an event stream or NDJSON: a prefix is kept
	writeErr bool // the client stopped reading
	detached bool // sent from under the recorder, which end then checks
	end      func()
}

func (rec *recorder) WriteHeader(code int) {
	rec.ObserveHeader(code, rec.ResponseWriter.Header())
	rec.ResponseWriter.WriteHeader(code)
}

// keep copies what the check needs of b, the body's next bytes.
func (rec *recorder) keep(b []byte) {
	switch {
	case rec.stream:
		if room := maxStreamKept - rec.body.Len(); room > 0 {
			rec.body.Write(b[:min(room, len(b))])
		}
	case !rec.over:
		if rec.body.Len()+len(b) > maxKept {
			rec.over = true
			rec.body.Reset()
		} else {
			rec.body.Write(b)
		}
	}
}

// The recorder is an httpapi.Observer, so that follow streams can still
// leave net/http under it, and be checked.

func (rec *recorder) ObserveDetach() {
	rec.detached = true
	rec.ResponseWriter = nil // see httpapi.Observer
}

func (rec *recorder) ObserveHeader(code int, h http.Header) {
	if rec.status == 0 && code >= 200 {
		rec.status = code
		rec.header = h.Clone()
		switch mediaType(rec.header.Get("Content-Type")) {
		case "text/event-stream", "application/x-ndjson":
			rec.stream = true
		}
	}
}

func (rec *recorder) ObserveBody(p []byte) { rec.keep(p) }

func (rec *recorder) ObserveEnd() { rec.end() }

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.WriteHeader(http.StatusOK)
	}
	rec.keep(b)
	n, err := rec.ResponseWriter.Write(b)
	if err != nil {
		rec.writeErr = true
	}
	return n, err
}

func (rec *recorder) Flush() {
	if rec.status == 0 {
		rec.WriteHeader(http.StatusOK)
	}
	http.NewResponseController(rec.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection's deadlines.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }
