package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"buildlog"
	"buildlog/internal/httpapi"
	"buildlog/internal/live"
	"buildlog/internal/metrics"
	"buildlog/internal/sqlite"
	"buildlog/internal/sweep"
	"buildlog/internal/web"
	"buildlog/internal/webhook"
)

type serveConfig struct {
	addr             string
	data             string
	store            string
	idleTimeout      time.Duration
	keepalive        time.Duration
	maxBody          int64
	maxBatch         int
	maxMessage       int64
	maxStreamsPerKey int
	maxStreams       int
	ratePerKey       float64
	rateBurst        int
	readHeaderTime   time.Duration
	readTimeout      time.Duration
	retention        time.Duration
	streamTokenTTL   time.Duration
	shutdownTimeout  time.Duration
	logLevel         string
	webhookMaxAge    time.Duration
	webhookPrivate   bool
	maxLogBytes      int64
	logHeadBytes     int64
}

const serveUsage = `Usage: buildlog serve [flags]

Runs the server. Example:
  BUILDLOG_ADMIN_KEY=secret buildlog serve --addr 127.0.0.1:8080 --data ./buildlog-data

Flags (each also BUILDLOG_<FLAG>):
`

func serveFlags(stderr io.Writer) (*flag.FlagSet, *serveConfig) {
	c := &serveConfig{
		idleTimeout:     30 * time.Minute,
		keepalive:       httpapi.DefaultKeepalive,
		maxBody:         httpapi.DefaultMaxBody,
		maxMessage:      buildlog.DefaultMaxMessage,
		streamTokenTTL:  httpapi.DefaultStreamTokenTTL,
		shutdownTimeout: 10 * time.Second,
		readHeaderTime:  10 * time.Second,
		readTimeout:     2 * time.Minute,
		webhookMaxAge:   webhook.DefaultMaxAge,
		maxLogBytes:     buildlog.DefaultLogCap.MaxBytes,
		logHeadBytes:    buildlog.DefaultLogCap.HeadBytes,
	}
	fs := newFlagSet("serve", serveUsage, stderr)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&c.data, "data", "./buildlog-data", "directory of the embedded SQLite store")
	fs.StringVar(&c.store, "store", "", "store URL: postgres://... selects PostgreSQL (then --data is unused)")
	fs.Var(durationValue{&c.idleTimeout}, "idle-timeout", "finish a build as timeout after this long without appends (default 30m)")
	fs.Var(durationValue{&c.keepalive}, "keepalive", "interval of keepalive comments on open streams (default 15s)")
	fs.Var(sizeValue{&c.maxBody}, "max-body", "largest request body; larger is 413 (default 16MiB)")
	fs.IntVar(&c.maxBatch, "max-batch", buildlog.DefaultMaxBatch, "most entries in one append; more is 413")
	fs.Var(sizeValue{&c.maxMessage}, "max-message", "longest entry message in bytes; longer is 400 (default 64KiB)")
	fs.IntVar(&c.maxStreamsPerKey, "max-streams-per-key", httpapi.DefaultMaxStreamsPerKey, "open streams one key may hold; more is 429")
	fs.IntVar(&c.maxStreams, "max-streams", httpapi.DefaultMaxStreams, "open streams this server holds in all; more is 429")
	fs.Float64Var(&c.ratePerKey, "rate-per-key", defaultRatePerKey, "requests a second one key may make on average; more is 429 (0: no limit)")
	fs.IntVar(&c.rateBurst, "rate-burst", 0, "requests one key may make at once above its rate (default twice --rate-per-key)")
	fs.Var(durationValue{&c.readHeaderTime}, "read-header-timeout", "time a client has to send a request's headers; slower is cut off (default 10s)")
	fs.Var(durationValue{&c.readTimeout}, "read-timeout", "time a client has to send a whole request, body included (default 2m)")
	fs.Var(durationValue{&c.retention}, "retention", "delete finished builds, metadata and log, this long after they finished, e.g. 30d (default 0: keep forever)")
	fs.Var(durationValue{&c.streamTokenTTL}, "stream-token-ttl", "lifetime of browser stream tokens (default 5m)")
	fs.Var(durationValue{&c.shutdownTimeout}, "shutdown-timeout", "on SIGTERM, how long in-flight requests may take to finish (default 10s)")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.Var(durationValue{&c.webhookMaxAge}, "webhook-max-age", "retry a failing webhook delivery for this long after its event, then give it up (default 24h)")
	fs.BoolVar(&c.webhookPrivate, "webhook-allow-private", false, "let webhooks target loopback, private and link-local addresses (tests, internal networks)")
	fs.Var(capSizeValue{&c.maxLogBytes}, "max-log-bytes", "most bytes of one build's log kept (its head and its most recent entries); 0 for no cap (default 100MiB)")
	fs.Var(sizeValue{&c.logHeadBytes}, "log-head-bytes", "bytes from the start of a log always kept under --max-log-bytes (default 1MiB)")
	return fs, c
}

// defaultRatePerKey is generous for one producer (a durable commit takes
// ~0.2 ms, so one key in a loop of small appends makes ~5k requests a
// second at most) while keeping one runaway client from taking the whole
// server from every other team.
const defaultRatePerKey = 1000

func serve(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	fs, c := serveFlags(stderr)
	if help, err := parseCommand(fs, args, env); help || err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return usageError{fmt.Sprintf("--log-level: want debug, info, warn or error")}
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	if c.maxLogBytes > 0 && c.logHeadBytes >= c.maxLogBytes {
		return usageError{"--log-head-bytes: want less than --max-log-bytes"}
	}
	store, err := openStore(ctx, c)
	if err != nil {
		return err
	}
	defer store.Close()
	m := metrics.New()
	if st, ok := store.(interface {
		SetLogCap(buildlog.LogCap, func(int64))
		StartCompactor(time.Duration)
	}); ok {
		st.SetLogCap(buildlog.LogCap{MaxBytes: c.maxLogBytes, HeadBytes: c.logHeadBytes}, m.LogOmitted)
		// Stopped by store.Close, before the writer it swaps segments in
		// through.
		st.StartCompactor(compactEvery)
	}
	secret, err := store.Secret(ctx)
	if err != nil {
		return fmt.Errorf("reading the server secret: %w", err)
	}
	adminKey := getenv(env, "BUILDLOG_ADMIN_KEY")
	if adminKey == "" {
		if err := bootstrapKey(ctx, store, stdout); err != nil {
			return err
		}
	}

	hub := live.New(0)
	api := httpapi.New(httpapi.Config{
		Store: store, Hub: hub, AdminKey: adminKey, Secret: secret, Logger: log,
		Limits:           buildlog.Limits{MaxBatch: c.maxBatch, MaxMessage: int(c.maxMessage)},
		MaxBody:          c.maxBody,
		Keepalive:        c.keepalive,
		StreamTokenTTL:   c.streamTokenTTL,
		MaxStreamsPerKey: c.maxStreamsPerKey,
		MaxStreams:       c.maxStreams,
		RatePerKey:       c.ratePerKey,
		RateBurst:        c.rateBurst,
		Metrics:          m,

		WebhookAllowPrivate: c.webhookPrivate,
	})

	// Deferred after store.Close, so it runs first.
	stopBg := startBackground(store, api.Store(), hub, c, log, m)
	defer stopBg()

	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	root := http.NewServeMux()
	root.Handle("/console/", web.Handler())
	root.Handle("/", api)
	srv := &http.Server{
		Handler: logRequests(log, root),
		// No WriteTimeout: it is absolute and would cut long streams;
		// streams set a deadline per write instead.
		// Against slowloris clients, which hold connections by trickling
		// a request: headers must arrive within ReadHeaderTimeout, the
		// whole request within ReadTimeout.
		ReadHeaderTimeout: c.readHeaderTime,
		ReadTimeout:       c.readTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("listening", "addr", ln.Addr().String(), "store", storeName(c))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Drain: streams end cleanly so clients reconnect with Last-Event-ID;
	// Shutdown stops accepting and waits for in-flight appends, whose
	// replies are sent only after a durable commit.
	log.Info("shutting down")
	api.Drain()
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown timed out; closing connections", "err", err)
		srv.Close()
	}
	// Follow streams took their connections over from srv, so Shutdown
	// did not wait for them; the store must outlive their last read.
	if err := api.Wait(sctx); err != nil {
		log.Warn("shutdown timed out with streams still open", "err", err)
	}
	stopBg()
	return nil
}

// startBackground starts the server's work beside its requests: the idle
// sweep, which commits through published so that followers hear of it;
// retention when configured; the webhook deliverer; and, for a store
// several servers share, the commit watcher. stop ends them and returns once all have, so that the
// store is never closed under a query of theirs.
func startBackground(store, published buildlog.Store, hub *live.Hub, c *serveConfig, log *slog.Logger, m *metrics.Metrics) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if w, ok := store.(buildlog.CommitWatcher); ok {
		wg.Go(func() { w.WatchCommits(ctx, hub.Notify) })
	}
	wg.Go(func() { (&sweep.Idle{Store: published, Timeout: c.idleTimeout, Log: log}).Run(ctx) })
	if c.retention > 0 {
		wg.Go(func() {
			(&sweep.Retention{Store: store, Keep: c.retention, Pause: 100 * time.Millisecond, Log: log}).Run(ctx)
		})
	}
	// The deliverer records or releases its attempts under way when ctx
	// ends; stop waits for that, so the store stays open until it has.
	wg.Go(func() {
		(&webhook.Deliverer{Store: store, MaxAge: c.webhookMaxAge, AllowPrivate: c.webhookPrivate,
			Log: log, Metrics: m}).Run(ctx)
	})
	return func() { cancel(); wg.Wait() }
}

func storeName(c *serveConfig) string {
	if c.store != "" {
		return "postgres"
	}
	return "sqlite:" + c.data
}

// compactEvery is how often the compactor looks for logs to compact
// besides the finishes that wake it.
const compactEvery = 5 * time.Second

func openStore(ctx context.Context, c *serveConfig) (buildlog.Store, error) {
	switch {
	case c.store == "":
		return sqlite.Open(ctx, c.data)
	case strings.HasPrefix(c.store, "postgres://"), strings.HasPrefix(c.store, "postgresql://"):
		return openPostgres(ctx, c.store)
	default:
		return nil, usageError{"--store: want a postgres:// URL, or leave it empty for the embedded store under --data"}
	}
}

// bootstrapKey makes the first admin key of a store that has none, and
// prints it: the only time it is ever shown.
func bootstrapKey(ctx context.Context, store buildlog.Store, out io.Writer) error {
	keys, err := store.Keys(ctx)
	if err != nil {
		return err
	}
	if len(keys) > 0 {
		return nil
	}
	secret, id := buildlog.NewKeySecret()
	k := &buildlog.Key{ID: id, Team: buildlog.DefaultTeam, Scopes: []buildlog.Scope{buildlog.ScopeAdmin},
		Name: "bootstrap", CreatedAt: time.Now().UTC().Truncate(time.Microsecond), Hash: buildlog.HashKey(secret)}
	if err := store.CreateKey(ctx, k); err != nil {
		return err
	}
	fmt.Fprintf(out, "buildlog: created the first admin key (shown only now, store it safely):\n\n  %s\n\n", secret)
	return nil
}
