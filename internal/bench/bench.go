// Package bench measures a buildlog server on the machine it runs on:
// durable ingest, single-entry append latency, replay, live fan-out and
// polling, each beside a baseline of the machine's own limits measured in
// the same run (a file with fdatasync, bytes served from memory), so that
// the ratio says how much of the machine the server uses.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"buildlog"
)

// Config says what to measure and at what sizes. Zero sizes take Default's.
type Config struct {
	// URL and Key target a running server; empty URL starts one.
	URL, Key string
	// Store is "" for SQLite in a fresh temporary directory, or a
	// postgres:// URL: a fresh database is created beside the one it names
	// and dropped after the run, unless PGReuse says to use it as is.
	Store   string
	PGReuse bool
	// ServeCommand runs `buildlog serve` (e.g. {"/path/buildlog", "serve"});
	// when set, the servers run as child processes, as deployed, and
	// fan-out's (a child of its own) has memory and sockets of its own.
	// Nil serves from this process, which --cpuprofile can then see.
	ServeCommand []string
	// Dir holds the data directory and the baseline files ("" = os.TempDir);
	// baselines are only meaningful on the disk the store uses.
	Dir string

	// Runs is how many times each scenario but fan-out is measured; the
	// table shows medians.
	Runs int
	// Only lists the scenarios to run (see Scenarios); empty runs them all.
	Only []string

	IngestProducers int // concurrent producers, one build each
	IngestBatches   int // batches per producer
	IngestBatchSize int // entries per batch

	SingleRequests int // sequential one-entry appends

	ReplayEntries int // entries in the replayed (and polled) build
	PollLimit     int // lines per dialect C page

	FanoutFollowers int           // concurrent followers of one build
	FanoutRate      int           // entries appended per second
	FanoutBatch     int           // entries per append request
	FanoutDuration  time.Duration // how long the producer appends

	FleetBuilds   int           // fleet: concurrent producers, one build each
	FleetBatch    int           // fleet: entries per append
	FleetDuration time.Duration // fleet: how long each round's loop runs
	// Redis is the redis-server fleet compares with: "" for the one on
	// PATH (none there: no comparison), "none" for no comparison.
	Redis string

	StorageBuilds int   // storage: finished builds of the corpus
	StorageBatch  int   // storage: entries per append
	StorageCap    int64 // storage: the capped build's --max-log-bytes

	FarmBuilds    int           // farm: builds appending at once
	FarmFollowers int           // farm: followers of each build
	FarmRate      int           // farm: appends per second per build
	FarmBatch     int           // farm: entries per append
	FarmDuration  time.Duration // farm: how long the producers append

	// HeapProfile, with an in-process fan-out server, is where to write a
	// heap profile taken once every follower is connected.
	HeapProfile string

	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Default is what a plain `buildlog bench` measures: the sizes the targets
// in docs/PERFORMANCE.md are stated for, in under 3 minutes on 2 cores.
var Default = Config{
	Runs:            3,
	IngestProducers: 4,
	IngestBatches:   250,
	IngestBatchSize: 1000,
	SingleRequests:  2000,
	ReplayEntries:   1_000_000,
	PollLimit:       10000,
	FanoutFollowers: 2000,
	FanoutRate:      100,
	FanoutBatch:     10,
	FanoutDuration:  30 * time.Second,
	FleetBuilds:     256,
	FleetBatch:      10,
	FleetDuration:   8 * time.Second,
	FarmBuilds:      256,
	FarmFollowers:   4,
	FarmRate:        10,
	FarmBatch:       10,
	FarmDuration:    20 * time.Second,
	StorageBuilds:   5,
	StorageBatch:    200,
	StorageCap:      1 << 20,
}

// Quick is every scenario at tiny sizes, a few seconds in all: a smoke
// test that the instrument works, not a measurement.
var Quick = Config{
	Runs:            1,
	IngestProducers: 4,
	IngestBatches:   5,
	IngestBatchSize: 1000,
	SingleRequests:  50,
	ReplayEntries:   20000,
	PollLimit:       10000,
	FanoutFollowers: 50,
	FanoutRate:      100,
	FanoutBatch:     10,
	FanoutDuration:  2 * time.Second,
	FleetBuilds:     16,
	FleetBatch:      10,
	FleetDuration:   time.Second,
	FarmBuilds:      16,
	FarmFollowers:   2,
	FarmRate:        10,
	FarmBatch:       10,
	FarmDuration:    2 * time.Second,
	StorageBuilds:   1,
	StorageBatch:    200,
	StorageCap:      256 << 10,
}

// Scenarios in the order they run.
var Scenarios = []string{"ingest", "single", "replay", "polling", "fanout", "fleet", "farm", "storage"}

func (c Config) withDefaults(d Config) Config {
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&c.Runs, d.Runs)
	set(&c.IngestProducers, d.IngestProducers)
	set(&c.IngestBatches, d.IngestBatches)
	set(&c.IngestBatchSize, d.IngestBatchSize)
	set(&c.SingleRequests, d.SingleRequests)
	set(&c.ReplayEntries, d.ReplayEntries)
	set(&c.PollLimit, d.PollLimit)
	set(&c.FanoutFollowers, d.FanoutFollowers)
	set(&c.FanoutRate, d.FanoutRate)
	set(&c.FanoutBatch, d.FanoutBatch)
	set(&c.FleetBuilds, d.FleetBuilds)
	set(&c.FleetBatch, d.FleetBatch)
	set(&c.FarmBuilds, d.FarmBuilds)
	set(&c.FarmFollowers, d.FarmFollowers)
	set(&c.FarmRate, d.FarmRate)
	set(&c.FarmBatch, d.FarmBatch)
	set(&c.StorageBuilds, d.StorageBuilds)
	set(&c.StorageBatch, d.StorageBatch)
	if c.StorageCap <= 0 {
		c.StorageCap = d.StorageCap
	}
	for _, v := range []struct {
		d   *time.Duration
		def time.Duration
	}{
		{&c.FanoutDuration, d.FanoutDuration}, {&c.FleetDuration, d.FleetDuration}, {&c.FarmDuration, d.FarmDuration},
	} {
		if *v.d <= 0 {
			*v.d = v.def
		}
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return c
}

func (c Config) validate() error {
	for _, s := range c.Only {
		if !slices.Contains(Scenarios, s) {
			return fmt.Errorf("scenario %q: want some of %s", s, strings.Join(Scenarios, ", "))
		}
	}
	if c.URL != "" && c.Key == "" {
		return errors.New("--url needs --key (an admin key, or one with read and write)")
	}
	if (c.URL != "" || c.PGReuse) && slices.Contains(c.Only, "storage") {
		return errors.New("storage measures stores' files on servers of its own: not with --url or --pg-reuse")
	}
	if c.URL != "" && c.Store != "" {
		return errors.New("--url and --store exclude each other: the server at --url has its own store")
	}
	if c.IngestBatchSize > 10000 {
		return errors.New("--ingest-batch: at most 10000 entries, the server's default limit")
	}
	if c.FleetBatch > 10000 || c.FarmBatch > 10000 {
		return errors.New("--batch, --farm-batch: at most 10000 entries, the server's default limit")
	}
	if c.StorageBatch > 10000 {
		return errors.New("--storage-batch: at most 10000 entries, the server's default limit")
	}
	if c.StorageCap < 16<<10 {
		return errors.New("--storage-cap: at least 16KiB")
	}
	if c.FarmRate > 1000 {
		return errors.New("--farm-rate: at most 1000 appends per second per build")
	}
	if c.FanoutBatch > c.FanoutRate {
		return errors.New("--fanout-batch: at most --fanout-rate entries per append")
	}
	return nil
}

// configError is a Config that cannot run, as opposed to a failed measurement.
type configError struct{ error }

// IsConfigError says err is about the Config (a usage error), not the run.
func IsConfigError(err error) bool {
	var c configError
	return errors.As(err, &c)
}

func (c Config) runs(s string) bool { return len(c.Only) == 0 || slices.Contains(c.Only, s) }

// Run measures, printing progress to cfg.Log and the table to out. base is
// Default or Quick: the sizes cfg's zero fields take.
func Run(ctx context.Context, cfg Config, base Config, out io.Writer) error {
	cfg = cfg.withDefaults(base)
	if err := cfg.validate(); err != nil {
		return configError{err}
	}
	r := &runner{cfg: cfg, log: cfg.Log, started: time.Now(), load0: loadAverage()}
	defer r.cleanup()
	if err := r.setup(ctx); err != nil {
		return err
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"ingest", r.ingest},
		{"single", r.single},
		{"replay", r.replay},
		{"polling", r.polling},
		{"fanout", r.fanout},
		{"fleet", r.fleet},
		{"farm", r.farm},
		{"storage", r.storage},
	}
	for _, s := range steps {
		if !cfg.runs(s.name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		r.progress("%s…", s.name)
		if err := s.fn(ctx); err != nil {
			r.figs = append(r.figs, figure{scenario: s.name, name: "error", text: err.Error()})
			r.progress("%s failed: %v", s.name, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	r.print(out)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, f := range r.figs {
		if f.name == "error" {
			return errors.New("some scenarios failed; see the table")
		}
	}
	return nil
}

// runner holds one run's server and results.
type runner struct {
	cfg     Config
	log     io.Writer
	started time.Time
	load0   string // the load average when the run began

	tmp     string // our temporary directory
	pgDSN   string // the database the run uses ("" for SQLite)
	dropDB  func()
	srv     *server // the server of every scenario but fan-out
	c       *client
	figs    []figure
	storeIs string

	replayID string // the finished build replay and polling read
	sseBody  []byte // its SSE stream, for the in-memory baseline
}

func (r *runner) progress(format string, args ...any) {
	fmt.Fprintf(r.log, "[%5.1fs] %s\n", time.Since(r.started).Seconds(), fmt.Sprintf(format, args...))
}

func (r *runner) setup(ctx context.Context) error {
	var err error
	if r.tmp, err = os.MkdirTemp(r.cfg.Dir, "buildlog-bench-"); err != nil {
		return err
	}
	switch {
	case r.cfg.URL != "":
		r.storeIs = "the server at " + r.cfg.URL
		r.srv = &server{URL: strings.TrimSuffix(r.cfg.URL, "/"), Key: r.cfg.Key}
	case r.cfg.Store != "":
		r.pgDSN = r.cfg.Store
		if !r.cfg.PGReuse {
			if r.pgDSN, r.dropDB, err = freshDatabase(ctx, r.cfg.Store); err != nil {
				return err
			}
		}
		r.storeIs = "PostgreSQL (" + redact(r.pgDSN) + ")"
		if r.srv, err = r.start(ctx, r.pgDSN, "", &uncapped); err != nil {
			return err
		}
	default:
		r.storeIs = "SQLite in " + r.tmp
		if r.srv, err = r.start(ctx, "", filepath.Join(r.tmp, "data"), &uncapped); err != nil {
			return err
		}
	}
	r.c = newClient(r.srv.URL, r.srv.Key, r.cfg.IngestProducers+4)
	return nil
}

// uncapped is the size cap of the server the scenarios share: none. Their
// builds (a million-entry replay, the ingest producers' builds) are far
// past the default 100 MiB, and a capped log would measure the cap's drop
// instead and fail the scenarios' checks of every offset; storage measures
// the cap on a server of its own.
var uncapped = buildlog.LogCap{}

// start runs the server every scenario but fan-out measures (and, with a
// cap, storage's capped one); logCap nil is the server's default cap.
func (r *runner) start(ctx context.Context, dsn, dir string, logCap *buildlog.LogCap) (*server, error) {
	if len(r.cfg.ServeCommand) > 0 {
		r.storeIs += ", `buildlog serve` child process, no size cap"
		return startChild(ctx, r.cfg.ServeCommand, dsn, dir, 1<<20, logCap)
	}
	r.storeIs += ", served from the bench process (no request logging or metrics, no size cap)"
	return startInProcess(ctx, dsn, dir, 1<<20, logCap)
}

func (r *runner) cleanup() {
	if r.c != nil {
		r.c.close()
	}
	if r.srv != nil {
		r.srv.Close()
	}
	if r.dropDB != nil {
		r.dropDB()
	}
	if r.tmp != "" {
		os.RemoveAll(r.tmp)
	}
}

// redact hides a DSN's password.
func redact(dsn string) string {
	if i := strings.Index(dsn, "://"); i >= 0 {
		if at := strings.LastIndex(dsn, "@"); at > i {
			if colon := strings.Index(dsn[i+3:at], ":"); colon >= 0 {
				return dsn[:i+3+colon] + ":***" + dsn[at:]
			}
		}
	}
	return dsn
}

// machine describes where the figures come from.
func machine() string {
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kb int64
				fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
				mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	return fmt.Sprintf("%d CPUs (GOMAXPROCS %d), %s memory, %s/%s, %s",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), mem, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// loadAverage is the 1-minute load average (Linux), or "?": other work on
// the machine while the bench runs skews every figure, so the table says.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}
