package main

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"time"

	"buildlog/internal/httpapi"
)

// logRequests logs each request with an id (also sent as X-Request-Id).
// It logs the path without the query, which may hold a stream token.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		b := make([]byte, 8)
		rand.Read(b)
		id := hex.EncodeToString(b)
		w.Header().Set("X-Request-Id", id)
		// A follow stream is logged when it ends, as before it took its
		// connection over from net/http.
		// The record keeps what it logs, not r: a follow stream is logged
		// hours later, and r with its headers is a kilobyte to keep.
		ctx, method, path := r.Context(), r.Method, r.URL.Path
		httpapi.Record(w, r, next, func(status int) {
			log.LogAttrs(ctx, slog.LevelInfo, "request",
				slog.String("request_id", id), slog.String("method", method),
				slog.String("path", path), slog.Int("status", status),
				slog.Duration("duration", time.Since(start)))
		})
	})
}
