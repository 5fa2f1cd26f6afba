package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"buildlog/internal/httpapi"
)

// StatusRecorder reports the final status a handler sent, as the client
// saw it, and lets flushes through to the connection.
func TestStatusRecorder(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler func(w http.ResponseWriter)
		want    int
	}{
		{"nothing written", func(w http.ResponseWriter) {}, 200},
		{"body only", func(w http.ResponseWriter) { w.Write([]byte("x")) }, 200},
		{"body, then a late header", func(w http.ResponseWriter) { w.Write([]byte("x")); w.WriteHeader(500) }, 200},
		{"two headers", func(w http.ResponseWriter) { w.WriteHeader(404); w.WriteHeader(500) }, 404},
		{"interim, then final", func(w http.ResponseWriter) { w.WriteHeader(103); w.WriteHeader(201) }, 201},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &httpapi.StatusRecorder{ResponseWriter: httptest.NewRecorder()}
			tc.handler(rec)
			if got := rec.Status(); got != tc.want {
				t.Fatalf("Status() = %d, want %d", got, tc.want)
			}
		})
	}
	inner := httptest.NewRecorder()
	if err := http.NewResponseController(&httpapi.StatusRecorder{ResponseWriter: inner}).Flush(); err != nil || !inner.Flushed {
		t.Fatalf("Flush through the recorder: %v, flushed %v", err, inner.Flushed)
	}
}
