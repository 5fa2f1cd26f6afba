package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/httpapi"
	"buildlog/internal/sse"
	"buildlog/internal/testkit"
)

const adminKey = "adm_test_key"

type server struct {
	t     *testing.T
	URL   string
	api   *httpapi.API
	store buildlog.Store
	now   *time.Time // when set, the API's clock
}

// newServer starts the real API over loopback on a real SQLite file.
func newServer(t *testing.T, mod ...func(*httpapi.Config)) *server {
	t.Helper()
	return serverOn(t, testkit.OpenSQLite(t, t.TempDir()), mod...)
}

// serverOn starts an API over loopback on st, which the caller owns.
func serverOn(t *testing.T, st buildlog.Store, mod ...func(*httpapi.Config)) *server {
	t.Helper()
	secret, err := st.Secret(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, store: st}
	cfg := httpapi.Config{Store: st, AdminKey: adminKey, Secret: secret, Keepalive: time.Second}
	for _, m := range mod {
		m(&cfg)
	}
	s.api = httpapi.New(cfg)
	ts := httptest.NewServer(checked(t, s.api))
	t.Cleanup(func() { s.api.Drain(); ts.Close(); waitStreams(t, s.api) })
	s.URL = ts.URL
	return s
}

// checked puts h behind the OpenAPI checker: every response the test
// gets, and every request body the API accepts, must be as GET
// /openapi.json says, or the test fails. It is what keeps the document
// and the handlers from drifting apart.
func checked(t *testing.T, h http.Handler) http.Handler {
	t.Helper()
	return testkit.MustDoc(t).Handler(h, func(err error) { t.Errorf("openapi: %v", err) })
}

type resp struct {
	code   int
	header http.Header
	body   []byte
}

func (r resp) String() string { return fmt.Sprintf("%d %s", r.code, r.body) }

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("not a JSON object: %s", r)
	}
	return m
}

// errMessage returns error.message of a JSON error body.
func (r resp) errMessage(t *testing.T) string {
	t.Helper()
	var m struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(r.body, &m); err != nil || m.Error.Code == "" {
		t.Fatalf("not a JSON error body: %s", r)
	}
	return m.Error.Message
}

// do sends a request; body may be nil, []byte, string or a value to
// JSON-encode (see testkit.NewRequest); hdr are header name, value pairs.
func (s *server) do(method, path, key string, body any, hdr ...string) resp {
	s.t.Helper()
	res, b, _ := testkit.Call(s.t, method, s.URL+path, key, body, hdr...)
	return resp{res.StatusCode, res.Header, b}
}

func (s *server) want(r resp, code int) resp {
	s.t.Helper()
	if r.code != code {
		s.t.Fatalf("status %d, want %d: %s", r.code, code, r.body)
	}
	return r
}

func (s *server) newBuild(fields map[string]any) string {
	s.t.Helper()
	if fields == nil {
		fields = map[string]any{}
	}
	if _, ok := fields["build_id"]; !ok {
		fields["build_id"] = fmt.Sprintf("tb_%d", time.Now().UnixNano())
	}
	s.want(s.do("POST", "/v1/templates/tmpl_1/builds", adminKey, fields), 201)
	return fields["build_id"].(string)
}

func msgs(from, n int) []map[string]any {
	out := make([]map[string]any, n)
	for i := range out {
		out[i] = map[string]any{"message": "line " + strconv.Itoa(from+i)}
	}
	return out
}

func (s *server) append(id string, entries any) (first, next uint64) {
	s.t.Helper()
	r := s.want(s.do("POST", "/v1/templates/builds/"+id+"/logs", adminKey, entries), 200)
	var out struct {
		First uint64 `json:"first_offset"`
		Next  uint64 `json:"next_offset"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		s.t.Fatal(err)
	}
	return out.First, out.Next
}

func (s *server) finish(id, status string) resp {
	s.t.Helper()
	return s.do("POST", "/v1/templates/builds/"+id+"/finish", adminKey, map[string]any{"status": status})
}

func (s *server) build(id string) map[string]any {
	s.t.Helper()
	return s.want(s.do("GET", "/v1/templates/builds/"+id, adminKey, nil), 200).json(s.t)
}

func (s *server) nextOffset(id string) uint64 {
	s.t.Helper()
	return uint64(s.build(id)["next_offset"].(float64))
}

// stream is an open SSE response.
type stream struct {
	code int
	resp *http.Response
	rd   *sse.Reader
	stop context.CancelFunc
}

func (s *server) open(path, key string, hdr ...string) *stream {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := testkit.NewRequest(ctx, "GET", s.URL+path, key, nil, hdr...)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		s.t.Fatalf("GET %s: %v", path, err)
	}
	st := &stream{code: res.StatusCode, resp: res, rd: sse.NewReader(res.Body), stop: cancel}
	s.t.Cleanup(st.close)
	return st
}

func (st *stream) close() { st.stop(); st.resp.Body.Close() }

// all reads events until the stream ends; it fails after timeout.
func (st *stream) all(t *testing.T, timeout time.Duration) []sse.Event {
	t.Helper()
	timer := time.AfterFunc(timeout, st.stop)
	defer timer.Stop()
	return testkit.ReadEvents(t, st.rd)
}

// checkDense asserts events carry ids from..from+len-1 and matching offsets.
func checkDense(t *testing.T, evs []sse.Event, from uint64) {
	t.Helper()
	for i, ev := range evs {
		want := from + uint64(i)
		if ev.ID != strconv.FormatUint(want, 10) {
			t.Fatalf("event %d has id %q, want %d", i, ev.ID, want)
		}
		var e buildlog.Entry
		if err := json.Unmarshal(ev.Data, &e); err != nil {
			t.Fatalf("event %d data is not an entry: %s", i, ev.Data)
		}
		if e.Offset != want {
			t.Fatalf("event id %d carries offset %d", want, e.Offset)
		}
	}
}

// waitStreams waits for the streams that took their connections over,
// which httptest.Server.Close does not know of, to end after a Drain.
func waitStreams(t testing.TB, api *httpapi.API) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := api.Wait(ctx); err != nil {
		t.Errorf("streams still open 10s after Drain: %v", err)
	}
}
