package httpapi_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"buildlog/internal/httpapi"
	"buildlog/internal/sse"
	"buildlog/internal/testkit"
)

// detachServer is an API behind a request recorder, as serve's request
// log is, and the document checker, on a server that counts the
// connections handlers took over.
type detachServer struct {
	*server
	hijacked atomic.Int32
	done     chan int // statuses of the log reads (dialects A and B) the recorder saw complete
}

func newDetachServer(t *testing.T, opts ...func(*httpapi.Config)) *detachServer {
	t.Helper()
	st := testkit.OpenSQLite(t, t.TempDir())
	secret, err := st.Secret(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cfg := httpapi.Config{Store: st, AdminKey: adminKey, Secret: secret, Keepalive: time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	api := httpapi.New(cfg)
	d := &detachServer{server: &server{t: t, store: st, api: api}, done: make(chan int, 100)}
	// Both observers: the request log's recorder and the document checker.
	h := checked(t, api)
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpapi.Record(w, r, h, func(status int) {
			if r.Method == "GET" && (strings.HasSuffix(r.URL.Path, "/logs") || strings.HasSuffix(r.URL.Path, "/events")) {
				d.done <- status
			}
		})
	}))
	ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateHijacked {
			d.hijacked.Add(1)
		}
	}
	ts.Start()
	t.Cleanup(func() { api.Drain(); ts.Close(); waitStreams(t, api) })
	d.URL = ts.URL
	return d
}

// rawGet sends a GET on a fresh connection and returns the response
// headers and the connection's reader.
func (d *detachServer) rawGet(path, key, proto string) (net.Conn, *bufio.Reader, *http.Response) {
	d.t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(d.URL, "http://"))
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	req := "GET " + path + " " + proto + "\r\nHost: x\r\nAuthorization: Bearer " + key + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		d.t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		d.t.Fatal(err)
	}
	return conn, br, res
}

func (d *detachServer) wantDone(status int) {
	d.t.Helper()
	select {
	case got := <-d.done:
		if got != status {
			d.t.Fatalf("request recorded with status %d, want %d", got, status)
		}
	case <-time.After(10 * time.Second):
		d.t.Fatal("request never recorded as complete")
	}
}

func (d *detachServer) wantNotDone() {
	d.t.Helper()
	select {
	case got := <-d.done:
		d.t.Fatalf("request recorded complete (%d) while its stream is open", got)
	case <-time.After(50 * time.Millisecond):
	}
}

// A follow stream takes its connection over from net/http and still
// speaks HTTP/1.1 properly: chunked, Connection: close, a clean end once
// the build finishes, and the request recorded when the stream ends, with
// its status.
func TestFollowTakesConnectionOver(t *testing.T) {
	d := newDetachServer(t)
	id := d.newBuild(nil)
	d.append(id, msgs(0, 3))
	conn, br, res := d.rawGet("/v1/templates/builds/"+id+"/logs?follow=true", adminKey, "HTTP/1.1")
	if res.StatusCode != 200 || !res.Close || len(res.TransferEncoding) != 1 || res.TransferEncoding[0] != "chunked" ||
		!strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("response %d close=%v te=%v headers %v: want 200, chunked, Connection: close, an event stream",
			res.StatusCode, res.Close, res.TransferEncoding, res.Header)
	}
	if d.hijacked.Load() != 1 {
		t.Fatalf("%d connections taken over, want 1", d.hijacked.Load())
	}
	rd := sse.NewReader(res.Body)
	for i := range 3 {
		ev, err := rd.Next()
		if err != nil || ev.ID != strconv.Itoa(i) {
			t.Fatalf("event %d: %+v, %v", i, ev, err)
		}
	}
	d.wantNotDone()
	d.append(id, msgs(3, 1))
	if ev, err := rd.Next(); err != nil || ev.ID != "3" {
		t.Fatalf("live event: %+v, %v", ev, err)
	}
	d.want(d.finish(id, "ready"), 200)
	n, err := toEnd(rd)
	if err != nil {
		t.Fatalf("after %d more events: %v (the chunked body must end cleanly)", n, err)
	}
	if n != 1 {
		t.Fatalf("%d events after the last append, want the terminal one", n)
	}
	res.Body.Close()
	if b, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the response: read %q, %v; want the connection closed", b, err)
	}
	conn.Close()
	d.wantDone(200)
}

// A client that hangs up ends its stream at once, not at the stream's next
// write: with an hour between keepalives nothing else would notice, and
// the stream would hold its slot, its memory and the key's stream quota.
// Both dialects; a client that closes (FIN) and one that resets.
func TestFollowHangUpEndsStream(t *testing.T) {
	d := newDetachServer(t, func(c *httpapi.Config) { c.Keepalive = time.Hour })
	id := d.versionBuild("tb_hangup", "hangup", "1.0.0")
	d.append(id, msgs(0, 1))
	for _, path := range []string{"/v1/templates/builds/" + id + "/logs?follow=true", eventsPath("hangup", "1.0.0")} {
		for _, reset := range []bool{false, true} {
			conn, _, res := d.rawGet(path, adminKey, "HTTP/1.1")
			if ev, err := sse.NewReader(res.Body).Next(); err != nil || ev.ID != "0" {
				t.Fatalf("%s: first event %+v, %v", path, ev, err)
			}
			d.wantNotDone()
			if reset {
				conn.(*net.TCPConn).SetLinger(0)
			}
			conn.Close()
			d.wantDone(200)
		}
	}
}

// An error answered on a follow route is a complete response of its own,
// with its length, its status recorded.
func TestFollowErrorOnTakenConnection(t *testing.T) {
	d := newDetachServer(t)
	id := d.newBuild(nil)
	_, _, res := d.rawGet("/v1/templates/builds/"+id+"/logs?follow=true", "wrong", "HTTP/1.1")
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != 401 || res.ContentLength != int64(len(body)) || !strings.Contains(string(body), `"code":"unauthorized"`) ||
		res.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("%d (length %d) %s %v, %v: want a 401 JSON error with its length and WWW-Authenticate",
			res.StatusCode, res.ContentLength, body, res.Header, err)
	}
	d.wantDone(401)
}

// An HTTP/1.0 client cannot read chunks: its stream is delimited by the
// connection's close.
func TestFollowHTTP10(t *testing.T) {
	d := newDetachServer(t)
	id := d.newBuild(nil)
	d.append(id, msgs(0, 2))
	d.want(d.finish(id, "ready"), 200)
	_, _, res := d.rawGet("/v1/templates/builds/"+id+"/logs?follow=true", adminKey, "HTTP/1.0")
	if len(res.TransferEncoding) != 0 {
		t.Fatalf("HTTP/1.0 response with Transfer-Encoding %v", res.TransferEncoding)
	}
	n, err := toEnd(sse.NewReader(res.Body))
	if err != nil {
		t.Fatalf("after %d events: %v", n, err)
	}
	if n != 3 {
		t.Fatalf("%d events, want 2 entries and the end", n)
	}
	d.wantDone(200)
}

// Drain ends taken-over streams and Wait sees them end; CloseStreams cuts
// them at once, as a crash would.
func TestDrainAndCloseTakenStreams(t *testing.T) {
	d := newDetachServer(t)
	id := d.newBuild(nil)
	d.append(id, msgs(0, 1))
	open := func(n int) []*sse.Reader {
		var out []*sse.Reader
		for range n {
			_, _, res := d.rawGet("/v1/templates/builds/"+id+"/logs?follow=true", adminKey, "HTTP/1.1")
			rd := sse.NewReader(res.Body)
			if _, err := rd.Next(); err != nil {
				t.Fatal(err)
			}
			out = append(out, rd)
		}
		return out
	}
	cut := open(3)
	d.api.CloseStreams()
	for i, rd := range cut {
		var ne net.Error
		if _, err := rd.Next(); err == nil || errors.Is(err, io.EOF) || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("stream %d after CloseStreams: %v, want a cut (not a clean end, not a wait)", i, err)
		}
	}
	drained := open(3)
	d.api.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.api.Wait(ctx); err != nil {
		t.Fatalf("Wait after Drain: %v", err)
	}
	for i, rd := range drained {
		if _, err := toEnd(rd); err != nil {
			t.Fatalf("drained stream %d: %v, want a clean end", i, err)
		}
	}
}

// toEnd reads rd to its clean end and counts the events with an id.
func toEnd(rd *sse.Reader) (int, error) {
	n := 0
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if ev.HasID {
			n++
		}
	}
}

// A follower that waits has no goroutine: 200 of them, all caught up on
// a running build, add a handful at most (the hang-up watcher, timers'),
// and each still gets the next commit and the terminal entry.
func TestWaitingFollowersHaveNoGoroutine(t *testing.T) {
	d := newDetachServer(t)
	id := d.newBuild(nil)
	d.append(id, msgs(0, 1))
	base := runtime.NumGoroutine()
	const n = 200
	readers := make([]*sse.Reader, n)
	for i := range readers {
		_, _, res := d.rawGet("/v1/templates/builds/"+id+"/logs?follow=true", adminKey, "HTTP/1.1")
		readers[i] = sse.NewReader(res.Body)
		if ev, err := readers[i].Next(); err != nil || ev.ID != "0" {
			t.Fatalf("follower %d: first event %+v, %v", i, ev, err)
		}
	}
	// Stragglers finish their first stretch within moments.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine() - base; g > 20 {
		t.Fatalf("%d waiting followers hold %d goroutines", n, g)
	}
	d.append(id, msgs(1, 1))
	d.want(d.finish(id, "ready"), 200)
	for i, rd := range readers {
		if ev, err := rd.Next(); err != nil || ev.ID != "1" {
			t.Fatalf("follower %d: live event %+v, %v", i, ev, err)
		}
		if n, err := toEnd(rd); err != nil || n != 1 {
			t.Fatalf("follower %d: %d events to the end, %v; want the terminal one", i, n, err)
		}
		d.wantDone(200)
	}
}

// A taken-over stream keeps none of net/http's memory for its connection
// (its 4 KiB read and write buffers, the response), although the
// observers it was taken from under live as long as the stream: the
// request log's recorder kept the response, and with it the buffers (at
// 2,000 followers a child server's live heap during fan-out was 30 MB,
// 6.7 MB once the observers let go).
func TestTakenStreamsKeepNoConnectionBuffers(t *testing.T) {
	d := newDetachServer(t, func(c *httpapi.Config) { c.Keepalive = time.Hour })
	id := d.newBuild(nil)
	d.append(id, msgs(0, 1))
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	// Bare connections, so that the client's side costs little beside
	// the server's.
	const n = 300
	req := "GET /v1/templates/builds/" + id + "/logs?follow=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + adminKey + "\r\n\r\n"
	conns := make([]net.Conn, n)
	buf := make([]byte, 4096)
	before := heap()
	for i := range conns {
		c, err := net.Dial("tcp", strings.TrimPrefix(d.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		// Up to the first entry: the stream has been taken over and waits.
		var got []byte
		for !strings.Contains(string(got), "line 0") {
			k, err := c.Read(buf)
			if err != nil {
				t.Fatalf("follower %d: %v after %q", i, err, got)
			}
			got = append(got, buf[:k]...)
		}
	}
	per := float64(int64(heap())-int64(before)) / n
	t.Logf("live heap per waiting follower, server and client: %.0f bytes", per)
	// Measured: 6 KiB; 16 KiB with the recorder holding the response.
	if per > 10<<10 {
		t.Errorf("live heap per waiting follower %.0f bytes, want at most 10 KiB", per)
	}
	// Having let go of the response, the recorder still hears each end.
	for _, c := range conns {
		c.Close()
		d.wantDone(200)
	}
}
