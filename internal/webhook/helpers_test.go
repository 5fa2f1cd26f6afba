package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/httpapi"
	"buildlog/internal/metrics"
	"buildlog/internal/postgres"
	"buildlog/internal/testkit"
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

// eachStore runs fn on a fresh SQLite store and, when a PostgreSQL server
// is given, on a fresh PostgreSQL one.
func eachStore(t *testing.T, fn func(t *testing.T, st buildlog.Store)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, testkit.OpenSQLite(t, t.TempDir())) })
	t.Run("postgres", func(t *testing.T) {
		if pg == nil {
			t.Skip("BUILDLOG_TEST_POSTGRES is unset: set it to a DSN of a server where tests may create databases")
		}
		fn(t, testkit.OpenStore(t, postgres.Open, pgSchema(t)))
	})
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
	c := testkit.MustDoc(t)
	ts := httptest.NewServer(c.Handler(api, func(err error) { t.Errorf("openapi: %v", err) }))
	t.Cleanup(func() { api.Drain(); ts.Close() })
	return &server{t: t, URL: ts.URL, api: api}
}

// do sends a JSON request and returns the status and body.
func (s *server) do(method, path, key string, body any) (int, []byte) {
	s.t.Helper()
	res, b, _ := testkit.Call(s.t, method, s.URL+path, key, body)
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
