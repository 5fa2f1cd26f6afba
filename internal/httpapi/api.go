// Package httpapi serves buildlog over HTTP: the producer API, the reader
// API in its three dialects, keys and stream tokens. Handlers return errors;
// writeError is the one place a code becomes a status.
package httpapi

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"buildlog"
	"buildlog/internal/live"
	"buildlog/internal/metrics"
)

// Config is what the API needs; zero limits take defaults.
type Config struct {
	// Store is where everything lives; the API wraps it so that commits
	// reach Hub.
	Store buildlog.Store
	Hub   *live.Hub
	// AdminKey, when set, is an admin key for every team (BUILDLOG_ADMIN_KEY).
	AdminKey string
	// Secret signs stream tokens and page tokens (Store.Secret).
	Secret []byte
	Logger *slog.Logger
	Now    func() time.Time

	Limits           buildlog.Limits
	MaxBody          int64         // bytes per request body
	Keepalive        time.Duration // comment interval on open streams
	StreamTokenTTL   time.Duration
	MaxStreamsPerKey int
	// MaxStreams bounds the streams open on this server, whoever holds
	// them: each costs a goroutine, buffers and a socket.
	MaxStreams int
	// RatePerKey is the requests per second one key (or one build's
	// stream tokens) may make on average, with bursts up to RateBurst;
	// 0 means no limit. RateBurst 0 means twice RatePerKey.
	RatePerKey float64
	RateBurst  int

	// Metrics receives the server's measurements; nil records nothing.
	Metrics *metrics.Metrics

	// WebhookAllowPrivate lets hooks target loopback, private and
	// link-local addresses (--webhook-allow-private).
	WebhookAllowPrivate bool
}

// Defaults for Config's zero values; the serve flags show the same ones.
const (
	DefaultMaxBody          = 16 << 20
	DefaultKeepalive        = 15 * time.Second
	DefaultStreamTokenTTL   = 5 * time.Minute
	DefaultMaxStreamsPerKey = 1000
	DefaultMaxStreams       = 16384
)

// API is the HTTP face of a store.
type API struct {
	cfg      Config
	store    buildlog.Store
	hub      *live.Hub
	reads    readGroup  // followers' shared store reads
	frames   frameCache // followers' shared renderings
	log      *slog.Logger
	now      func() time.Time
	adminKey []byte // hash of Config.AdminKey
	tokenKey []byte // HMAC key for stream tokens
	pageKey  []byte // HMAC key for dialect C page tokens
	mux      *http.ServeMux

	// drained is done once streams should end (Drain): waiting followers
	// hear of it through context.AfterFunc (follow).
	drained context.Context
	drain   context.CancelFunc
	runq    runQueue // followers a commit woke (follow)

	streamsMu   sync.Mutex
	streams     map[string]int // open streams by key id
	streamCount int            // open streams on this server
	// byKey holds the cancel funcs of each key's open streams, so that
	// revoking a key ends them at once.
	byKey map[string]map[*reqState]struct{}

	limiter *limiter // nil without a rate limit
	cache   *appendCache

	// Streams that took their connections over (detach).
	detached      sync.WaitGroup
	detachedMu    sync.Mutex
	detachedConns map[net.Conn]struct{}
}

// New returns the API for cfg.
func New(cfg Config) *API {
	if cfg.Hub == nil {
		cfg.Hub = live.New(0)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = DefaultKeepalive
	}
	if cfg.StreamTokenTTL <= 0 {
		cfg.StreamTokenTTL = DefaultStreamTokenTTL
	}
	if cfg.MaxStreamsPerKey <= 0 {
		cfg.MaxStreamsPerKey = DefaultMaxStreamsPerKey
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	a := &API{
		cfg:     cfg,
		store:   cfg.Hub.Publishing(cfg.Store),
		hub:     cfg.Hub,
		log:     cfg.Logger,
		now:     cfg.Now,
		cache:   newAppendCache(),
		streams: make(map[string]int),
		byKey:   make(map[string]map[*reqState]struct{}),
	}
	if cfg.RatePerKey > 0 {
		burst := cfg.RateBurst
		if burst <= 0 {
			burst = max(1, int(2*cfg.RatePerKey))
		}
		a.limiter = newLimiter(cfg.RatePerKey, burst, cfg.Now)
	}
	if cfg.AdminKey != "" {
		a.adminKey = buildlog.HashKey(cfg.AdminKey)
	}
	a.drained, a.drain = context.WithCancel(context.Background())
	a.tokenKey = derive(cfg.Secret, "stream-token")
	a.pageKey = derive(cfg.Secret, "page-token")
	a.routes()
	return a
}

func derive(secret []byte, purpose string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

// Store is the publishing store the API writes through; other writers in
// the process (the idle sweep) use it so followers hear of their commits.
func (a *API) Store() buildlog.Store { return a.store }

// Drain ends every open stream cleanly, so clients reconnect (elsewhere or
// after a restart) with Last-Event-ID. Requests in flight finish normally.
func (a *API) Drain() { a.drain() }

// handlerFunc is a handler that reports failure by returning an error.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// reqState is what the layers of one request share through its context:
// the route (a metrics label), the principal once authenticated, and a
// cancel that ends the request early (a revoked key's stream).
type reqState struct {
	route  string
	cancel context.CancelFunc
	p      *principal
	// detached: the request's connection is taken over (detach), so the
	// handler may leave its stream to go on after it returns: later, set
	// by stream, takes the response over and calls end once it is
	// complete.
	detached bool
	later    func(end func())
}

type reqStateKey struct{}

func stateOf(r *http.Request) *reqState {
	st, _ := r.Context().Value(reqStateKey{}).(*reqState)
	return st
}

func (a *API) handle(pattern string, h handlerFunc) {
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if detachable(pattern, r) {
			if d := a.detach(w, r); d != nil {
				a.serve(pattern, h, d, r, func() {
					d.end()
					a.undetach(d)
				})
				return
			}
		}
		a.serve(pattern, h, w, r, nil)
	})
}

// serve runs h as the request's handler, with its state, error answer and
// metrics, then calls done (when not nil) once the response is complete.
// A detached stream's handler returns before its stream ends (see
// stream), and so does serve: net/http's goroutine is free at once.
func (a *API) serve(pattern string, h handlerFunc, w http.ResponseWriter, r *http.Request, done func()) {
	start := time.Now()
	var (
		ctx    context.Context
		cancel context.CancelFunc
	)
	d, detached := w.(*detachedWriter)
	if detached {
		// The stream's own context, cancelled at its end: a follower is
		// kept for hours, and a layer of context more is a few hundred
		// bytes more of it.
		ctx, cancel = d.ctx, d.cancel
	} else {
		ctx, cancel = context.WithCancel(r.Context())
	}
	st := &reqState{route: pattern, cancel: cancel, detached: detached}
	r = r.WithContext(context.WithValue(ctx, reqStateKey{}, st))
	rec := &StatusRecorder{ResponseWriter: w}
	if err := h(rec, r); err != nil {
		a.writeError(rec, r, err)
	}
	end := func() {
		a.cfg.Metrics.Request(pattern, rec.Status(), time.Since(start))
		cancel()
		if done != nil {
			done()
		}
	}
	if st.later != nil {
		st.later(end)
		return
	}
	end()
}

// StatusRecorder is a ResponseWriter that notes the status its handler
// sent, for metrics and request logs. Use Record to learn when a response
// is complete: a follow stream outlives its ServeHTTP (see detach).
type StatusRecorder struct {
	http.ResponseWriter
	status   int // 0 until the handler sends headers
	detached bool
	done     func(status int)
}

// Record serves r with next through a StatusRecorder and calls done with
// the final status once the response is complete: when ServeHTTP returns,
// or, for a stream that took its connection over, when the stream ends.
func Record(w http.ResponseWriter, r *http.Request, next http.Handler, done func(status int)) {
	rec := &StatusRecorder{ResponseWriter: w, done: done}
	next.ServeHTTP(rec, r)
	if !rec.detached {
		done(rec.Status())
	}
}

// Status is the status sent: 200 when the handler wrote without setting
// one, or wrote nothing.
func (s *StatusRecorder) Status() int {
	if s.status == 0 {
		return http.StatusOK
	}
	return s.status
}

// The StatusRecorder is an Observer: a follow stream sent from under it
// tells it its status, and its end, which Record reports.

// ObserveDetach lets go of the ResponseWriter: net/http's response holds
// its connection's read and write buffers (8 KiB), which a stream sent
// from under the recorder, for hours, would otherwise keep.
func (s *StatusRecorder) ObserveDetach() {
	s.detached = true
	s.ResponseWriter = nil
}

func (s *StatusRecorder) ObserveHeader(status int, _ http.Header) { s.status = status }

func (s *StatusRecorder) ObserveBody([]byte) {}

func (s *StatusRecorder) ObserveEnd() {
	if s.done != nil {
		s.done(s.Status())
	}
}

func (s *StatusRecorder) WriteHeader(code int) {
	if s.status == 0 && code >= 200 { // 1xx are interim; the final status follows
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *StatusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and SetWriteDeadline;
// without it streams would silently stop flushing.
func (s *StatusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// ServeHTTP serves the API.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

func (a *API) ready(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.cfg.Store.Ping(ctx); err != nil {
		a.log.Warn("readiness: store unreachable", "err", err)
		return buildlog.Errorf(buildlog.EUnavailable, "store unreachable")
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

// writeError is the one place an error becomes a status and a JSON body.
// An error without a code comes from the store failing (I/O, a lost
// connection, a full disk): the client sees 503 and may retry; the detail
// goes to the log only.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *buildlog.Error
	if !errors.As(err, &e) {
		if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
			return // the client left; nobody to answer
		}
		a.log.Error("store failure", "method", r.Method, "path", r.URL.Path, "err", err)
		if st := stateOf(r); st != nil {
			a.cfg.Metrics.StoreError(st.route)
		}
		e = buildlog.Errorf(buildlog.EUnavailable, "the store is unavailable; retry later")
	}
	switch e.Code {
	case buildlog.EUnauthorized, buildlog.EForbidden:
		a.cfg.Metrics.AuthFailure(e.Code)
	}
	status := buildlog.HTTPStatus(e.Code)
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="buildlog"`)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	body := struct {
		Error struct {
			Code       string  `json:"code"`
			Message    string  `json:"message"`
			NextOffset *uint64 `json:"next_offset,omitempty"`
		} `json:"error"`
	}{}
	body.Error.Code, body.Error.Message, body.Error.NextOffset = e.Code, e.Message, e.NextOffset
	writeJSON(w, status, body)
}

// writeList answers 200 with {name: xs}: an empty list is [], never null,
// so that clients need not tell the two apart.
func writeList[T any](w http.ResponseWriter, name string, xs []T) {
	if xs == nil {
		xs = []T{}
	}
	writeJSON(w, http.StatusOK, map[string]any{name: xs})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	// Not HTML-escaped: no answer is HTML, and a message such as
	// "missing Authorization: Bearer <key>" should read as written, not as
	// "\u003ckey\u003e", to curl users and log readers.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	b := []byte(`{"error":{"code":"internal","message":"internal error"}}` + "\n")
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
	} else {
		b = buf.Bytes() // Encode ends it with a newline
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b)
}
