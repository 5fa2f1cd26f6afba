package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"buildlog"
	"buildlog/client"
	"buildlog/internal/testkit"
)

func newBuild(t *testing.T, c *client.Client, id string) {
	t.Helper()
	if _, err := c.CreateBuild(context.Background(), "tmpl", client.NewBuild{BuildID: id}); err != nil {
		t.Fatal(err)
	}
}

func msgs(n, from int) []buildlog.Entry {
	out := make([]buildlog.Entry, n)
	for i := range out {
		out[i] = buildlog.Entry{Message: fmt.Sprintf("line %d", from+i)}
	}
	return out
}

// checkDense fails unless got holds offsets 0..want-1 in order, with the
// terminal entry last.
func checkDense(t *testing.T, got []buildlog.Entry, want int) {
	t.Helper()
	if len(got) != want {
		t.Fatalf("got %d entries, want %d", len(got), want)
	}
	for i, e := range got {
		if e.Offset != uint64(i) {
			t.Fatalf("entry %d has offset %d: a duplicate or a gap", i, e.Offset)
		}
	}
	if !got[len(got)-1].Terminal() {
		t.Fatalf("last entry %+v is not terminal", got[len(got)-1])
	}
}

// produce appends n entries in batches of 10 and finishes the build.
func produce(t *testing.T, c *client.Client, id string, n int, pause time.Duration) {
	ctx := context.Background()
	next := uint64(0)
	for i := 0; i < n; i += 10 {
		res, err := c.Append(ctx, id, next, msgs(10, i))
		if err != nil {
			t.Error(err)
			return
		}
		next = res.NextOffset
		time.Sleep(pause)
	}
	if _, err := c.Finish(ctx, id, client.Finish{Status: buildlog.StatusReady}); err != nil {
		t.Error(err)
	}
}

func TestStreamReconnectsThroughDroppedConnections(t *testing.T) {
	s := startServer(t, t.TempDir(), "", nil)
	p := testkit.NewProxy(t, s.addr)
	producer := s.client()
	newBuild(t, producer, "tb_drop")

	// The proxy cuts every connection every 30 ms while entries arrive.
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
				p.Cut()
			}
		}
	}()
	defer close(stop)
	go produce(t, producer, "tb_drop", 1000, 2*time.Millisecond)

	reader := proxyClient(p, time.Millisecond, 20*time.Millisecond)
	var reconnects atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var got []buildlog.Entry
	for e, err := range reader.Stream(ctx, "tb_drop", client.StreamOptions{Follow: true,
		OnReconnect: func(error, time.Duration) { reconnects.Add(1) }}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	checkDense(t, got, 1001)
	if reconnects.Load() == 0 {
		t.Fatal("the stream was never cut; the test tested nothing")
	}
	t.Logf("%d entries through %d reconnects", len(got), reconnects.Load())
}

func TestStreamSurvivesServerKilledAndRestarted(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, "", nil)
	c := s.client()
	newBuild(t, c, "tb_kill")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.Append(ctx, "tb_kill", 0, msgs(50, 0)); err != nil {
		t.Fatal(err)
	}

	var errs []error
	got := []buildlog.Entry{}
	restarted := make(chan *server, 1)
	for e, err := range c.Stream(ctx, "tb_kill", client.StreamOptions{Follow: true,
		OnReconnect: func(err error, _ time.Duration) { errs = append(errs, err) }}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
		if len(got) == 50 {
			// Kill the server mid-stream and start a new one on the same
			// address and data; write the rest of the log through it.
			s.kill()
			go func() {
				s2 := startServer(t, dir, s.addr, nil)
				restarted <- s2
				produceFrom(t, s2.client(), "tb_kill", 50, 50)
			}()
		}
	}
	<-restarted
	checkDense(t, got, 101)
	if len(errs) == 0 {
		t.Fatal("no reconnect was needed; the kill did not cut the stream")
	}
}

func produceFrom(t *testing.T, c *client.Client, id string, from, n int) {
	ctx := context.Background()
	if _, err := c.Append(ctx, id, uint64(from), msgs(n, from)); err != nil {
		t.Error(err)
		return
	}
	if _, err := c.Finish(ctx, id, client.Finish{Status: buildlog.StatusFailed}); err != nil {
		t.Error(err)
	}
}

func TestStreamEndsOn204AndStopsOnRefusal(t *testing.T) {
	s := startServer(t, t.TempDir(), "", nil)
	c := s.client()
	ctx := context.Background()
	newBuild(t, c, "tb_done")
	produce(t, c, "tb_done", 10, 0)

	n := 0
	for _, err := range c.Stream(ctx, "tb_done", client.StreamOptions{From: 11, Follow: true}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 0 {
		t.Fatalf("got %d entries past the end of a finished build", n)
	}

	// Tail resolves against the end once: the last 3 entries.
	var offs []uint64
	for e, err := range c.Stream(ctx, "tb_done", client.StreamOptions{Tail: 3}) {
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, e.Offset)
	}
	if fmt.Sprint(offs) != "[8 9 10]" {
		t.Fatalf("tail 3 gave offsets %v", offs)
	}

	var errs []error
	for _, err := range c.Stream(ctx, "tb_nope", client.StreamOptions{Follow: true}) {
		errs = append(errs, err)
	}
	if len(errs) != 1 || !isErr(errs[0], buildlog.ENotFound) || buildlog.ErrorMessage(errs[0]) != "build tb_nope not found" {
		t.Fatalf("stream of a missing build yielded %v", errs)
	}

	bad := client.New(s.URL, "wrong", nil)
	for _, err := range bad.Stream(ctx, "tb_done", client.StreamOptions{}) {
		if !isErr(err, buildlog.EUnauthorized) {
			t.Fatalf("bad key: %v", err)
		}
	}
}

func TestStreamGivesUpAfterMaxRetries(t *testing.T) {
	s := startServer(t, t.TempDir(), "", nil)
	c := s.client()
	newBuild(t, c, "tb_gone")
	s.kill()
	var last error
	for _, err := range c.Stream(context.Background(), "tb_gone", client.StreamOptions{Follow: true, MaxRetries: 3}) {
		last = err
	}
	var te *client.TransportError
	if !errors.As(last, &te) {
		t.Fatalf("want a transport error after the retries, got %v", last)
	}
}

func TestAppendRetryAfterLostReplyStoresOnce(t *testing.T) {
	isAppend := func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/logs") && r.Method == "POST" }
	s := startServer(t, t.TempDir(), "", abortAfterHandling(2, isAppend))
	c := s.client()
	newBuild(t, c, "tb_lost")
	ctx := context.Background()
	res, err := c.Append(ctx, "tb_lost", 0, msgs(5, 0))
	if err != nil {
		t.Fatal(err)
	}
	if res.FirstOffset != 0 || res.NextOffset != 5 {
		t.Fatalf("retried append answered %+v, want 0..5", res)
	}
	if got := logOf(t, s.store, "tb_lost"); len(got) != 5 {
		t.Fatalf("stored %d entries after a retried append of 5", len(got))
	}

	// A batch at a stale offset is refused with the build's next offset.
	_, err = c.Append(ctx, "tb_lost", 2, msgs(1, 99))
	var be *buildlog.Error
	if !errors.As(err, &be) || be.Code != buildlog.EConflict || be.NextOffset == nil || *be.NextOffset != 5 {
		t.Fatalf("stale offset: %v", err)
	}
}

func TestErrorsCarryServerCodeAndMessage(t *testing.T) {
	s := startServer(t, t.TempDir(), "", nil)
	c := s.client()
	_, err := c.Build(context.Background(), "tb_123")
	var be *buildlog.Error
	if !errors.As(err, &be) || be.Code != buildlog.ENotFound || be.Message != "build tb_123 not found" {
		t.Fatalf("got %#v", err)
	}
	_, err = c.CreateBuild(context.Background(), "tmpl", client.NewBuild{BuildID: "bad id"})
	if !isErr(err, buildlog.EInvalid) || !strings.Contains(buildlog.ErrorMessage(err), "build_id") {
		t.Fatalf("got %v", err)
	}
}

func TestBuildsAndKeys(t *testing.T) {
	s := startServer(t, t.TempDir(), "", nil)
	c := s.client()
	ctx := context.Background()
	k, err := c.CreateKey(ctx, "acme", []buildlog.Scope{buildlog.ScopeRead, buildlog.ScopeWrite}, "ci")
	if err != nil {
		t.Fatal(err)
	}
	acme := client.New(s.URL, k.Key, nil)
	for _, id := range []string{"tb_a", "tb_b", "tb_c"} {
		if _, err := acme.CreateBuild(ctx, "tmpl", client.NewBuild{BuildID: id}); err != nil {
			t.Fatal(err)
		}
	}
	page, err := acme.Builds(ctx, client.BuildFilter{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Builds) != 2 || page.Builds[0].ID != "tb_c" || page.NextCursor == "" {
		t.Fatalf("first page %+v", page)
	}
	page, err = acme.Builds(ctx, client.BuildFilter{Limit: 2, Cursor: page.NextCursor})
	if err != nil || len(page.Builds) != 1 || page.Builds[0].ID != "tb_a" || page.NextCursor != "" {
		t.Fatalf("last page %+v %v", page, err)
	}
	keys, err := c.Keys(ctx)
	if err != nil || len(keys) != 1 || keys[0].ID != k.ID {
		t.Fatalf("keys %v %v", keys, err)
	}
	if err := c.RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.Build(ctx, "tb_a"); !isErr(err, buildlog.EUnauthorized) {
		t.Fatalf("revoked key still works: %v", err)
	}
	if err := c.RevokeKey(ctx, k.ID); !isErr(err, buildlog.ENotFound) {
		t.Fatalf("revoking twice: %v", err)
	}
}

// corruptWriter breaks the JSON of the entry whose message is "line 2", as
// a server of a newer, incompatible format (or a broken proxy) might.
type corruptWriter struct{ http.ResponseWriter }

func (w corruptWriter) Write(b []byte) (int, error) {
	n := len(b)
	_, err := w.ResponseWriter.Write(bytes.Replace(b, []byte(`"message":"line 2"`), []byte(`"message":line 2`), 1))
	return n, err
}

func (w corruptWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// An entry the client cannot decode ends the stream with the decode error
// at once: reconnecting would only meet the same entry again.
func TestStreamEndsOnUndecodableEntry(t *testing.T) {
	var reads atomic.Int32
	s := startServer(t, t.TempDir(), "", func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == "GET" && strings.HasSuffix(r.URL.Path, "/logs") {
				reads.Add(1)
				w = corruptWriter{w}
			}
			next.ServeHTTP(w, r)
		})
	})
	c := s.client()
	newBuild(t, c, "tb_bad")
	if _, err := c.Append(context.Background(), "tb_bad", 0, msgs(5, 0)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var offs []uint64
	var errs []error
	for e, err := range c.Stream(ctx, "tb_bad", client.StreamOptions{Follow: true}) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		offs = append(offs, e.Offset)
	}
	if fmt.Sprint(offs) != "[0 1]" {
		t.Fatalf("yielded offsets %v, want [0 1]", offs)
	}
	var de *client.DecodeError
	if len(errs) != 1 || !errors.As(errs[0], &de) || de.ID != "2" {
		t.Fatalf("stream ended with %v, want one *client.DecodeError for event 2", errs)
	}
	if client.Retryable(errs[0]) {
		t.Fatal("a decode error is Retryable")
	}
	if n := reads.Load(); n != 1 {
		t.Fatalf("%d connections for an entry that can never be decoded, want 1", n)
	}
}
