package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"buildlog"
	"buildlog/client"
	"buildlog/internal/httpapi"
	"buildlog/internal/sqlite"
	"buildlog/internal/testkit"
)

const adminKey = "adm_client_test"

// server is the real API on a real SQLite file, served over loopback on a
// fixed address so that it can be killed and started again in its place.
type server struct {
	t     *testing.T
	dir   string
	addr  string
	URL   string
	store *sqlite.Store
	api   *httpapi.API
	srv   *http.Server
	done  chan struct{}
}

// startServer serves the store in dir on addr ("" for a free port); wrap,
// when set, stands between the network and the API.
func startServer(t *testing.T, dir, addr string, wrap func(http.Handler) http.Handler) *server {
	t.Helper()
	st, err := sqlite.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := st.Secret(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	// The old listener's port may take a moment to be free again.
	for deadline := time.Now().Add(10 * time.Second); ; {
		ln, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	api := httpapi.New(httpapi.Config{Store: st, AdminKey: adminKey, Secret: secret, Keepalive: time.Second})
	var h http.Handler = api
	if wrap != nil {
		h = wrap(api)
	}
	s := &server{t: t, dir: dir, addr: ln.Addr().String(), URL: "http://" + ln.Addr().String(),
		store: st, api: api, srv: &http.Server{Handler: h}, done: make(chan struct{})}
	go func() { s.srv.Serve(ln); close(s.done) }()
	t.Cleanup(s.kill)
	return s
}

// kill stops the server at once, cutting every connection mid-stream, as
// a crash would (the store's commits are durable, so nothing acknowledged
// is lost).
func (s *server) kill() {
	select {
	case <-s.done:
		return
	default:
	}
	s.srv.Close()
	s.api.CloseStreams() // follow streams are not srv's to close
	<-s.done
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.api.Wait(ctx); err != nil {
		s.t.Errorf("streams still open 10s after their connections were cut: %v", err)
	}
	s.store.Close()
}

func (s *server) client() *client.Client {
	c := client.New(s.URL, adminKey, nil)
	c.Backoff = client.Backoff{Min: 10 * time.Millisecond, Max: 200 * time.Millisecond}
	return c
}

// proxyClient returns an admin client that reaches the backend through p
// and waits from lo to hi between retries, so that a test of an outage
// does not wait long for the next one.
func proxyClient(p *testkit.Proxy, lo, hi time.Duration) *client.Client {
	c := client.New(p.URL, adminKey, nil)
	c.Backoff = client.Backoff{Min: lo, Max: hi}
	return c
}

// logOf reads the whole stored log of a build, straight from the store.
func logOf(t *testing.T, st buildlog.Store, id string) []buildlog.Entry {
	t.Helper()
	chunks, err := st.ReadLog(context.Background(), id, 0, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	var out []buildlog.Entry
	for _, ch := range chunks {
		ch.Lines(func(_ uint64, line []byte) bool {
			var e buildlog.Entry
			if err := json.Unmarshal(line, &e); err != nil {
				t.Fatalf("stored line %s: %v", line, err)
			}
			out = append(out, e)
			return true
		})
	}
	return out
}

// abortAfterHandling wraps the API so that the first n requests matching match are
// handled in full (committed) but their answers are lost: the connection
// is cut as if the network failed after the server did its work.
func abortAfterHandling(n int, match func(*http.Request) bool) func(http.Handler) http.Handler {
	var mu sync.Mutex
	left := n
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			lose := left > 0 && match(r)
			if lose {
				left--
			}
			mu.Unlock()
			if !lose {
				next.ServeHTTP(w, r)
				return
			}
			next.ServeHTTP(discard{h: http.Header{}}, r)
			panic(http.ErrAbortHandler)
		})
	}
}

type discard struct{ h http.Header }

func (d discard) Header() http.Header         { return d.h }
func (d discard) Write(p []byte) (int, error) { return len(p), nil }
func (d discard) WriteHeader(int)             {}

func isErr(err error, code string) bool {
	var e *buildlog.Error
	return errors.As(err, &e) && e.Code == code
}
