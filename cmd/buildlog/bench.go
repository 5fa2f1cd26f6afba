package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"buildlog/internal/bench"
)

const benchUsage = `Usage: buildlog bench [flags]

Measures buildlog on this machine and prints one table: each figure beside
a baseline of the machine's own limit measured in the same run (a file
written with one fdatasync per batch; the same SSE bytes served from
memory) and the ratio between them. Figures are medians of --runs runs.

By default it runs ` + "`buildlog serve`" + ` as a child process on the embedded
SQLite store in a fresh temporary directory (deleted after), and fan-out
against a child of its own, so that the server's memory is its own.

Scenarios (--only or --scenario picks some):
  ingest   4 producers, one build each, batches of 1,000 entries, durable acks
  single   one producer, one entry per request; p50/p99 latency
  replay   dialect A follow=false over a finished 1,000,000-entry build
  polling  dialect C nextToken loop over the same build
  fanout   2,000 followers of one build, producer at 100 entries/s for 30s
  fleet    256 producers, a build each, 10-entry appends back to back for 8s,
           alternating with the same loop on a private durable Redis
           (redis-server from PATH, appendfsync always) when there is one
  farm     256 builds appending 10 entries 10 times a second, 4 followers
           each; delivery latency and server CPU per delivered event
  storage  5 finished builds of real build output (a corpus built in),
           compacted: bytes on disk against the message text; then one
           build writing 10× a 1 MiB cap: what the store keeps of it

Examples:
  buildlog bench                        # the full run, about 4 minutes on 2 cores
  buildlog bench --quick                # every scenario at tiny sizes, seconds
  buildlog bench --only fanout --followers 10000
  buildlog bench --scenario fleet --builds 16 --batch 10
  buildlog bench --scenario fleet --builds 1 --batch 1     # single-entry latency
  buildlog bench --scenario storage --store 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'
  buildlog bench --store 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'
  buildlog bench --url http://10.0.0.5:8080 --key "$BUILDLOG_ADMIN_KEY"

Flags:
`

func benchCmd(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", benchUsage, stderr)
	var (
		cfg        bench.Config
		quick      bool
		only       string
		scenario   string
		quiet      bool
		cpuprofile string
		serveBin   string
		inProcess  bool
	)
	fs.BoolVar(&quick, "quick", false, "every scenario at tiny sizes, one run: a smoke test of a few seconds, not a measurement")
	fs.IntVar(&cfg.Runs, "runs", 0, "runs of each scenario but fan-out; the table shows medians (default 3)")
	fs.StringVar(&only, "only", "", "comma-separated scenarios to run: "+strings.Join(bench.Scenarios, ","))
	fs.StringVar(&scenario, "scenario", "", "the same as --only")
	fs.StringVar(&cfg.URL, "url", "", "measure the server at this URL instead of starting one")
	fs.StringVar(&cfg.Key, "key", "", "with --url: an admin key (or one with read and write); default $BUILDLOG_API_KEY")
	fs.StringVar(&cfg.Store, "store", "", "postgres://... measures the PostgreSQL store: a fresh database is created beside the one named and dropped after")
	fs.BoolVar(&cfg.PGReuse, "pg-reuse", false, "with --store: use the named database as it is, for a role that may not create databases")
	fs.StringVar(&cfg.Dir, "dir", "", "directory for the data and baseline files (default the system temp dir); put it on the disk you mean to measure")
	fs.IntVar(&cfg.IngestProducers, "ingest-producers", 0, "ingest: concurrent producers, one build each (default 4)")
	fs.IntVar(&cfg.IngestBatches, "ingest-batches", 0, "ingest: batches per producer (default 250)")
	fs.IntVar(&cfg.IngestBatchSize, "ingest-batch", 0, "ingest: entries per batch (default 1000)")
	fs.IntVar(&cfg.SingleRequests, "single", 0, "single: sequential one-entry appends (default 2000)")
	fs.IntVar(&cfg.ReplayEntries, "replay-entries", 0, "replay and polling: entries in the finished build (default 1000000)")
	fs.IntVar(&cfg.PollLimit, "poll-limit", 0, "polling: lines per page, 1..10000 (default 10000)")
	fs.IntVar(&cfg.FanoutFollowers, "followers", 0, "fanout: concurrent followers of one build (default 2000; 10000 is the target's size)")
	fs.IntVar(&cfg.FanoutRate, "fanout-rate", 0, "fanout: entries the producer appends per second (default 100)")
	fs.IntVar(&cfg.FanoutBatch, "fanout-batch", 0, "fanout: entries per append request (default 10)")
	fs.Var(durationValue{&cfg.FanoutDuration}, "fanout-duration", "fanout: how long the producer appends (default 30s)")
	fs.IntVar(&cfg.FleetBuilds, "builds", 0, "fleet: concurrent producers, one build each (default 256)")
	fs.IntVar(&cfg.FleetBatch, "batch", 0, "fleet: entries per append (default 10)")
	fs.Var(durationValue{&cfg.FleetDuration}, "fleet-duration", "fleet: how long each round's loop runs, on buildlog and on Redis (default 8s)")
	fs.StringVar(&cfg.Redis, "redis", "", "fleet: the redis-server binary to compare with (default redis-server on PATH; none: no comparison)")
	fs.IntVar(&cfg.FarmBuilds, "farm-builds", 0, "farm: builds appending at once (default 256)")
	fs.IntVar(&cfg.FarmFollowers, "farm-followers", 0, "farm: followers of each build (default 4)")
	fs.IntVar(&cfg.FarmRate, "farm-rate", 0, "farm: appends per second per build (default 10)")
	fs.IntVar(&cfg.FarmBatch, "farm-batch", 0, "farm: entries per append (default 10)")
	fs.Var(durationValue{&cfg.FarmDuration}, "farm-duration", "farm: how long the producers append (default 20s)")
	fs.IntVar(&cfg.StorageBuilds, "storage-builds", 0, "storage: finished builds of the corpus (default 5)")
	fs.IntVar(&cfg.StorageBatch, "storage-batch", 0, "storage: entries per append (default 200)")
	fs.Var(sizeValue{&cfg.StorageCap}, "storage-cap", "storage: --max-log-bytes of the capped build's server (default 1MiB)")
	fs.StringVar(&serveBin, "serve-bin", "", "the buildlog binary to run as the server (default this one)")
	fs.BoolVar(&inProcess, "in-process", false, "serve from this process rather than from buildlog serve children, so that --cpuprofile and --memprofile see the server (fan-out's RSS then includes its followers)")
	fs.StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile of this process to FILE (the server too with --in-process)")
	fs.StringVar(&cfg.HeapProfile, "memprofile", "", "with --in-process: write a heap profile to FILE once every fan-out follower is connected")
	fs.BoolVar(&quiet, "q", false, "no progress lines on stderr")
	if help, err := parseCommand(fs, args, nil); help || err != nil {
		return err
	}
	for _, s := range []string{only, scenario} {
		if s != "" {
			cfg.Only = append(cfg.Only, strings.Split(s, ",")...)
		}
	}
	if cfg.URL != "" && cfg.Key == "" {
		cfg.Key = getenv(env, "BUILDLOG_API_KEY")
	}
	if cfg.PollLimit > 10000 {
		return usageError{"--poll-limit: want 1..10000, dialect C's range"}
	}
	if !inProcess && cfg.URL == "" {
		if serveBin == "" {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding this binary to run the server (give --serve-bin or --in-process): %w", err)
			}
			serveBin = exe
		}
		cfg.ServeCommand = []string{serveBin, "serve"}
	}
	if !quiet {
		cfg.Log = stderr
	}
	base := bench.Default
	if quick {
		base = bench.Quick
	}
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	err := bench.Run(ctx, cfg, base, stdout)
	if !quiet {
		fmt.Fprintf(stderr, "bench took %.1fs\n", time.Since(start).Seconds())
	}
	if err != nil && bench.IsConfigError(err) {
		return usageError{err.Error()}
	}
	return err
}
