package webhook_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/apicheck"
	"buildlog/internal/httpapi"
	"buildlog/internal/metrics"
	"buildlog/internal/postgres"
	"buildlog/internal/sqlite"
	"buildlog/internal/webhook"
)

const adminKey = "adm_webhook_test"

// pg is the database this run made on BUILDLOG_TEST_POSTGRES's server,
// or nil when that is unset; each test takes a fresh schema in it.
var pg *postgres.Scratch

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	admin := os.Getenv("BUILDLOG_TEST_POSTGRES")
	if admin == "" {
		return m.Run()
	}
	var err error
	if pg, err = postgres.NewScratch(context.Background(), admin, "buildlog_webhook_"); err != nil {
		fmt.Fprintf(os.Stderr, "BUILDLOG_TEST_POSTGRES: %v\n", err)
		return 1
	}
	defer pg.Close()
	return m.Run()
}

// pgSchema makes an empty schema, dropped when t ends, and returns a DSN
// whose search_path puts everything there.
func pgSchema(t *testing.T) string {
	t.Helper()
	dsn, drop, err := pg.Schema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drop() })
	return dsn
}

func openPostgres(t *testing.T, dsn string) buildlog.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// eachStore runs fn on a fresh SQLite store and, when a PostgreSQL server
// is given, on a fresh PostgreSQL one.
func eachStore(t *testing.T, fn func(t *testing.T, st buildlog.Store)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, openSQLite(t)) })
	t.Run("postgres", func(t *testing.T) {
		if pg == nil {
			t.Skip("BUILDLOG_TEST_POSTGRES is unset: set it to a DSN of a server where tests may create databases")
		}
		fn(t, openPostgres(t, pgSchema(t)))
	})
}

var (
	checkerOnce sync.Once
	checker     *apicheck.Checker
	checkerErr  error
)

// docChecker holds the API's exchanges and the deliveries to the
// OpenAPI document, as internal/httpapi's tests do.
func docChecker(t *testing.T) *apicheck.Checker {
	t.Helper()
	checkerOnce.Do(func() { checker, checkerErr = apicheck.New(httpapi.Document()) })
	if checkerErr != nil {
		t.Fatal(checkerErr)
	}
	return checker
}

// server is the real HTTP API on a store, over loopback.
type server struct {
	t   *testing.T
	URL string
	api *httpapi.API
}

func newServer(t *testing.T, st buildlog.Store, allowPrivate bool) *server {
	t.Helper()
	secret, err := st.Secret(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	api := httpapi.New(httpapi.Config{Store: st, AdminKey: adminKey, Secret: secret, WebhookAllowPrivate: allowPrivate})
	c := docChecker(t)
	ts := httptest.NewServer(c.Handler(api, func(err error) { t.Errorf("openapi: %v", err) }))
	t.Cleanup(func() { api.Drain(); ts.Close() })
	return &server{t: t, URL: ts.URL, api: api}
}

// do sends a JSON request and returns the status and body.
func (s *server) do(method, path, key string, body any) (int, []byte) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, ok := body.([]byte)
		if !ok {
			b, _ = json.Marshal(body)
		}
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.URL+path, rd)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// want sends a request that must answer code, and decodes its body into out.
func (s *server) want(code int, method, path, key string, body, out any) {
	s.t.Helper()
	got, b := s.do(method, path, key, body)
	if got != code {
		s.t.Fatalf("%s %s: %d %s, want %d", method, path, got, b, code)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			s.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
}

type createdHook struct {
	ID     string   `json:"id"`
	URL    string   `json:"url"`
	Events []string `json:"events"`
	Team   string   `json:"team"`
	Secret string   `json:"secret"`
}

// hook creates a hook with key; team "" leaves the field out.
func (s *server) hook(key, team, url string, events ...string) createdHook {
	s.t.Helper()
	body := map[string]any{"url": url}
	if len(events) > 0 {
		body["events"] = events
	}
	if team != "" {
		body["team"] = team
	}
	var h createdHook
	s.want(201, "POST", "/v1/webhooks", key, body, &h)
	return h
}

// key makes an API key of team with scopes.
func (s *server) key(team string, scopes ...string) string {
	s.t.Helper()
	var k struct{ Key string }
	s.want(201, "POST", "/v1/keys", adminKey, map[string]any{"team": team, "scopes": scopes}, &k)
	return k.Key
}

// build creates a build (as key's team), appends one entry and finishes
// it with status; it returns when the finish was answered.
func (s *server) build(key, id string, status buildlog.Status) time.Time {
	s.t.Helper()
	s.want(201, "POST", "/v1/templates/tmpl/builds", key, map[string]any{"build_id": id}, nil)
	s.want(200, "POST", "/v1/templates/builds/"+id+"/logs", key, []byte(`[{"message":"hello"}]`), nil)
	s.want(200, "POST", "/v1/templates/builds/"+id+"/finish", key, map[string]any{"status": status}, nil)
	return time.Now()
}

type attempt struct {
	ID         string    `json:"id"`
	Event      string    `json:"event"`
	BuildID    string    `json:"build_id"`
	Attempt    int       `json:"attempt"`
	StatusCode int       `json:"status_code"`
	Error      string    `json:"error"`
	Result     string    `json:"result"`
	DurationMS int64     `json:"duration_ms"`
	At         time.Time `json:"at"`
}

func (s *server) deliveries(key, hookID string) []attempt {
	s.t.Helper()
	var out struct{ Deliveries []attempt }
	s.want(200, "GET", "/v1/webhooks/"+hookID+"/deliveries", key, nil, &out)
	return out.Deliveries
}

// startDeliverer runs a deliverer on st until the test ends. Its backoff
// starts at 10 ms so that retries do not make tests wait seconds.
func startDeliverer(t *testing.T, st buildlog.Store, mod ...func(*webhook.Deliverer)) *webhook.Deliverer {
	t.Helper()
	d := &webhook.Deliverer{Store: st, AllowPrivate: true, Backoff: 10 * time.Millisecond, Metrics: metrics.New()}
	for _, m := range mod {
		m(d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

// request is what a receiver got.
type request struct {
	header http.Header
	body   []byte
	at     time.Time
}

func (r request) event() event {
	var e event
	json.Unmarshal(r.body, &e)
	return e
}

type event struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	CreatedAt time.Time       `json:"created_at"`
	Build     *buildlog.Build `json:"build"`
}

// receiver is a real HTTP server that records what it gets and answers
// with respond(n) for its n-th request (from 1), 204 when respond is nil.
type receiver struct {
	*httptest.Server
	t   *testing.T
	got chan request
	mu  sync.Mutex
	n   int
}

func newReceiver(t *testing.T, respond func(n int, r *http.Request) int) *receiver {
	return newRawReceiver(t, func(rc *receiver, w http.ResponseWriter, r *http.Request) {
		n := rc.note(r)
		code := http.StatusNoContent
		if respond != nil {
			code = respond(n, r)
		}
		w.WriteHeader(code)
	})
}

// newRawReceiver is a receiver whose handler does all the answering;
// it calls rc.note to record a request.
func newRawReceiver(t *testing.T, h func(rc *receiver, w http.ResponseWriter, r *http.Request)) *receiver {
	rc := &receiver{t: t, got: make(chan request, 1000)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h(rc, w, r) }))
	t.Cleanup(rc.Close)
	return rc
}

// note records r and returns its number, from 1.
func (rc *receiver) note(r *http.Request) int {
	body, _ := io.ReadAll(r.Body)
	// What hooks receive is documented too, under the document's webhooks.
	if err := docChecker(rc.t).CheckDelivery(r.Header, body); err != nil {
		rc.t.Errorf("openapi: %v", err)
	}
	rc.mu.Lock()
	rc.n++
	n := rc.n
	rc.mu.Unlock()
	rc.got <- request{header: r.Header.Clone(), body: body, at: time.Now()}
	return n
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.n
}

// next waits for the receiver's next request.
func (rc *receiver) next(t *testing.T) request {
	t.Helper()
	select {
	case r := <-rc.got:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("no delivery within 20 s")
		return request{}
	}
}

// verify checks a request's signature as a receiver would.
func verify(t *testing.T, secret string, r request) {
	t.Helper()
	if err := checkSignature(secret, r); err != nil {
		t.Error(err)
	}
}

// checkSignature is a receiver's check: the HMAC-SHA256 of "<t>.<body>"
// with the hook's secret, and a timestamp within 5 minutes.
func checkSignature(secret string, r request) error {
	sig := r.header.Get("Buildlog-Signature")
	var ts, v1 string
	for _, part := range strings.Split(sig, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			v1 = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("Buildlog-Signature %q: no t=<unix seconds>", sig)
	}
	if d := r.at.Sub(time.Unix(sec, 0)); d < -5*time.Minute || d > 5*time.Minute {
		return fmt.Errorf("Buildlog-Signature t=%s is %v away from the request", ts, d)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(r.body)
	got, err := hex.DecodeString(v1)
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		return fmt.Errorf("Buildlog-Signature %q does not verify with the hook's secret", sig)
	}
	return nil
}

func openSQLite(t *testing.T) buildlog.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// eventually polls cond for up to 20 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
