package httpapi_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"buildlog/internal/httpapi"
	"buildlog/internal/testkit"
)

// watchedWriter stands between the server and a handler: it notes the
// first write or flush that fails and counts what the handler tries after
// it. failOn, when set, makes a write that contains it fail unwritten.
type watchedWriter struct {
	http.ResponseWriter
	failOn []byte
	failed bool
	after  int
}

var errInjected = errors.New("injected write failure")

func (w *watchedWriter) Write(b []byte) (int, error) {
	if w.failed {
		w.after++
	}
	if w.failOn != nil && bytes.Contains(b, w.failOn) {
		w.failed = true
		return 0, errInjected
	}
	n, err := w.ResponseWriter.Write(b)
	if err != nil {
		w.failed = true
	}
	return n, err
}

func (w *watchedWriter) FlushError() error {
	if w.failed {
		w.after++
	}
	err := http.NewResponseController(w.ResponseWriter).Flush()
	if err != nil {
		w.failed = true
	}
	return err
}

func (w *watchedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// A page whose write fails stops there: it neither writes the rest of the
// page (which could only fail too, or end a cut page as if whole) nor
// hides the failure, whether it is a write mid-page to a client that
// stopped reading or the page's last write.
func TestPageStopsAtFailedWrite(t *testing.T) {
	defer httpapi.SetStreamWriteTimeout(300 * time.Millisecond)()
	st := testkit.OpenSQLite(t, t.TempDir())
	var logs testkit.SyncBuffer
	s := &server{t: t, store: st}
	secret, err := st.Secret(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s.api = httpapi.New(httpapi.Config{Store: st, AdminKey: adminKey, Secret: secret,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	var (
		mu     sync.Mutex
		failOn []byte
	)
	done := make(chan *watchedWriter, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "GET" || !strings.HasSuffix(r.URL.Path, "/logs") {
			s.api.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		ww := &watchedWriter{ResponseWriter: w, failOn: failOn}
		mu.Unlock()
		s.api.ServeHTTP(ww, r)
		done <- ww
	}))
	t.Cleanup(func() { s.api.Drain(); ts.Close(); waitStreams(t, s.api) })
	s.URL = ts.URL

	// 24 MB, far more than loopback socket buffers hold, in one page.
	big := s.newBuild(nil)
	for range 2 {
		es := make([]map[string]any, 200)
		for i := range es {
			es[i] = map[string]any{"message": strings.Repeat("x", 60000)}
		}
		s.append(big, es)
	}
	small := s.newBuild(nil)
	s.append(small, msgs(0, 3))

	for _, tc := range []struct {
		name, path, accept string
		id                 string
		failOn             string // "": the client stops reading instead
	}{
		{"A page, stalled client", "/v1/templates/builds/" + big + "/logs?limit=10000", "application/json", big, ""},
		{"C page, stalled client", "/v1/builds/" + big + "/logs?startFromHead=true&limit=10000", "", big, ""},
		{"A page, last write fails", "/v1/templates/builds/" + small + "/logs", "application/json", small, `"next_offset":`},
		{"C page, last write fails", "/v1/builds/" + small + "/logs?startFromHead=true", "", small, `"nextToken":`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			failOn = nil
			if tc.failOn != "" {
				failOn = []byte(tc.failOn)
			}
			mu.Unlock()
			logged := len(logs.String())
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+tc.path, nil)
			req.Header.Set("Authorization", "Bearer "+adminKey)
			if tc.accept != "" {
				req.Header.Set("Accept", tc.accept)
			}
			res, err := http.DefaultClient.Do(req)
			if err == nil {
				defer res.Body.Close() // never read: a stalled client
			}
			var ww *watchedWriter
			select {
			case ww = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("handler still running 30 s after its write failed")
			}
			if !ww.failed {
				t.Fatal("no write failed: the test did not test anything")
			}
			if ww.after != 0 {
				t.Errorf("handler wrote or flushed %d times after a write failed", ww.after)
			}
			// A real write failure cancels the request's context (net/http
			// does), so it counts as the client having left and is not
			// logged; any other failure is.
			if tc.failOn != "" && !strings.Contains(logs.String()[logged:], "stream ended early") {
				t.Errorf("the failed write was not logged; log: %s", logs.String()[logged:])
			}
		})
	}
}
