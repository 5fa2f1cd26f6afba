package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"buildlog"
	"buildlog/internal/httpapi"
	"buildlog/internal/live"
	"buildlog/internal/postgres"
	"buildlog/internal/sqlite"
)

// server is what a scenario runs against.
type server struct {
	URL string
	Key string
	// PID is the server's process when its memory can be read from /proc
	// on its own; 0 when it shares this process or is elsewhere.
	PID   int
	close func() error
}

func (s *server) Close() error {
	if s.close == nil {
		return nil
	}
	return s.close()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// openStore opens the store a run measures: SQLite in dir, or the
// PostgreSQL database dsn names.
func openStore(ctx context.Context, dsn, dir string) (buildlog.Store, error) {
	if dsn != "" {
		return postgres.Open(ctx, dsn)
	}
	return sqlite.Open(ctx, dir)
}

// startInProcess serves the API of a store over a real loopback listener in
// this process, as `buildlog serve` would, minus request logging.
func startInProcess(ctx context.Context, dsn, dir string, maxStreams int, logCap *buildlog.LogCap) (*server, error) {
	st, err := openStore(ctx, dsn, dir)
	if err != nil {
		return nil, err
	}
	if c, ok := st.(interface {
		SetLogCap(buildlog.LogCap, func(int64))
		StartCompactor(time.Duration)
	}); ok {
		// As serve does: the size cap, and compaction in the background
		// (stopped by the store's Close).
		if logCap == nil {
			logCap = &buildlog.DefaultLogCap
		}
		c.SetLogCap(*logCap, nil)
		c.StartCompactor(5 * time.Second)
	}
	secret, err := st.Secret(ctx)
	if err != nil {
		st.Close()
		return nil, err
	}
	key := "bench_" + randomHex(16)
	hub := live.New(0)
	api := httpapi.New(httpapi.Config{Store: st, Hub: hub, AdminKey: key, Secret: secret,
		MaxStreamsPerKey: maxStreams, MaxStreams: maxStreams})
	bg, stopBg := context.WithCancel(context.Background())
	if w, ok := st.(buildlog.CommitWatcher); ok {
		go w.WatchCommits(bg, hub.Notify)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		stopBg()
		st.Close()
		return nil, err
	}
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return &server{
		URL: "http://" + ln.Addr().String(),
		Key: key,
		close: func() error {
			api.Drain()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
			api.Wait(sctx)
			stopBg()
			return st.Close()
		},
	}, nil
}

// startChild runs `buildlog serve` as a child process, so that its memory
// is its own to measure and its sockets do not count against ours.
func startChild(ctx context.Context, command []string, dsn, dir string, maxStreams int, logCap *buildlog.LogCap) (*server, error) {
	key := "bench_" + randomHex(16)
	args := append(append([]string(nil), command[1:]...),
		"--addr", "127.0.0.1:0", "--idle-timeout", "24h",
		"--max-streams-per-key", strconv.Itoa(maxStreams), "--max-streams", strconv.Itoa(maxStreams),
		"--rate-per-key", "0", "--log-level", "info")
	switch {
	case logCap != nil && logCap.MaxBytes == 0 && !knowsFlag(command, "max-log-bytes"):
		// A --serve-bin from before the cap has none to turn off.
	case logCap != nil && logCap.MaxBytes == 0:
		args = append(args, "--max-log-bytes", "0")
	case logCap != nil:
		args = append(args, "--max-log-bytes", strconv.FormatInt(logCap.MaxBytes, 10),
			"--log-head-bytes", strconv.FormatInt(logCap.HeadBytes, 10))
	}
	if dsn != "" {
		args = append(args, "--store", dsn)
	} else {
		args = append(args, "--data", dir)
	}
	cmd := exec.Command(command[0], args...)
	// A clean environment, so that the user's BUILDLOG_* settings do not
	// change what is measured; Go runtime knobs pass through.
	cmd.Env = []string{"BUILDLOG_ADMIN_KEY=" + key, "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GOGC=") || strings.HasPrefix(kv, "GOMAXPROCS=") ||
			strings.HasPrefix(kv, "GOMEMLIMIT=") || strings.HasPrefix(kv, "GODEBUG=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	dieWithParent(cmd)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s serve: %w", command[0], err)
	}
	done := make(chan struct{})
	var waitErr error
	addrc := make(chan string, 1)
	var tailMu sync.Mutex
	var tail []string
	go func() {
		// Read the log to the end, so the child never blocks on a full
		// pipe; its listening line says where it is.
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		found := false
		for sc.Scan() {
			line := sc.Text()
			if !found {
				var m struct{ Msg, Addr string }
				if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "listening" {
					found = true
					addrc <- m.Addr
				}
			}
			tailMu.Lock()
			if tail = append(tail, line); len(tail) > 20 {
				tail = tail[1:]
			}
			tailMu.Unlock()
		}
	}()
	go func() { waitErr = cmd.Wait(); close(done) }()
	stop := func() error {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		return nil
	}
	select {
	case addr := <-addrc:
		return &server{URL: "http://" + addr, Key: key, PID: cmd.Process.Pid, close: stop}, nil
	case <-done:
		tailMu.Lock()
		defer tailMu.Unlock()
		return nil, fmt.Errorf("%s serve exited: %v\n%s", command[0], waitErr, strings.Join(tail, "\n"))
	case <-time.After(30 * time.Second):
		stop()
		return nil, errors.New("the serve child did not start listening within 30s")
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
}

// freshDatabase creates an empty database beside the one dsn names and
// returns its DSN and a func that drops it.
func freshDatabase(ctx context.Context, dsn string) (string, func(), error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", nil, errors.New("--store: want a postgres:// URL")
	}
	fresh, drop, err := postgres.CreateDatabase(ctx, dsn, "buildlog_bench_")
	if err != nil {
		return "", nil, fmt.Errorf("--store: %w (use --pg-reuse to run in the given database)", err)
	}
	return fresh, func() { drop() }, nil
}

// rssOf returns a process's resident set from /proc (Linux), in bytes.
func rssOf(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

// metricsRSS reads process_resident_memory_bytes from a server's
// Prometheus /metrics, the one view of a remote server's memory.
func metricsRSS(ctx context.Context, base string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("/metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "process_resident_memory_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int64(f), err
		}
	}
	return 0, errors.New("/metrics has no process_resident_memory_bytes")
}

// cpuOf returns the CPU time (user + system) a process has used, from
// /proc (Linux). Unlike a rate, it hardly depends on what else the machine
// is doing, so it is the figure to compare across busy runs.
func cpuOf(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces) start after ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("unreadable /proc/PID/stat")
	}
	// utime and stime are fields 14 and 15 of stat, in clock ticks,
	// which Linux fixes at 100 a second for user space.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("unreadable /proc/PID/stat")
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// cpuMeter measures a server child's CPU over a stretch of work; it
// measures nothing for a server it cannot see (in-process, or --url).
type cpuMeter struct {
	pid   int
	start time.Duration
	ok    bool
}

func (s *server) meter() cpuMeter {
	if s.PID <= 0 || s.PID == os.Getpid() {
		return cpuMeter{}
	}
	c, err := cpuOf(s.PID)
	return cpuMeter{pid: s.PID, start: c, ok: err == nil}
}

// per returns n divided by the CPU seconds used since meter, or false.
func (m cpuMeter) per(n float64) (float64, bool) {
	if !m.ok {
		return 0, false
	}
	c, err := cpuOf(m.pid)
	if err != nil || c <= m.start {
		return 0, false
	}
	return n / (c - m.start).Seconds(), true
}

// knowsFlag reports whether the serve command lists flag in its help.
func knowsFlag(command []string, flag string) bool {
	out, _ := exec.Command(command[0], append(append([]string(nil), command[1:]...), "-h")...).CombinedOutput()
	return bytes.Contains(out, []byte("-"+flag+" "))
}
