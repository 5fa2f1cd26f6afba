package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"buildlog"
	"buildlog/client"
)

const runUsage = `Usage: buildlog run --template T [--build-id ID] [--phase P] -- CMD [ARGS...]

Runs CMD as a build of template T: creates the build, streams each line
CMD writes to stdout and stderr as an entry (source stdout or stderr;
stderr lines at level warn unless --stderr-level says otherwise) while
passing the output through to this terminal, and finishes the build
ready when CMD exits 0, failed otherwise, with {"exit_code": N} as its
result. Ctrl-C or SIGTERM stops CMD (SIGTERM, then SIGKILL after
--kill-timeout) and finishes the build cancelled. Lines longer than
--max-message are split into several entries, never dropped. While the
server is unreachable, lines are buffered and retried; CMD is not held up
until the buffer (--max-buffered lines) is full.

The build id is printed to stderr first, so another terminal can follow:
  buildlog logs -f ID

Example:
  buildlog run --template base-image --phase install -- sh -c 'apt-get update && apt-get install -y curl'

Exit status: CMD's own (128+N when a signal N ended it); 127 when CMD
could not be started; 1 when the build could not be created; 2 on a usage
mistake.
`

func runCmd(ctx context.Context, args, env []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return done(ctx, runBuild(ctx, args, env, stdin, stdout, stderr))
}

func runBuild(ctx context.Context, args, env []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", runUsage, stderr)
	var (
		template, buildID, phase string
		stderrLevel              = "warn"
		killTimeout              = 10 * time.Second
		flushTimeout             = time.Minute
		maxMessage               = int64(buildlog.DefaultMaxMessage)
		maxBuffered              = 10000
	)
	fs.StringVar(&template, "template", "", "template `id` to build (required)")
	fs.StringVar(&buildID, "build-id", "", "the build's `id` (default: the server makes a UUID)")
	fs.StringVar(&phase, "phase", "", "`phase` of every entry (a lowercase word)")
	fs.StringVar(&stderrLevel, "stderr-level", stderrLevel, "`level` of stderr lines: debug, info, warn or error")
	fs.Var(durationValue{&killTimeout}, "kill-timeout", "after SIGTERM, how long CMD has before SIGKILL (default 10s)")
	fs.Var(durationValue{&flushTimeout}, "flush-timeout", "after CMD exits, how long to keep trying to deliver its log (default 1m)")
	fs.Var(sizeValue{&maxMessage}, "max-message", "longest entry message; longer lines are split (default 64KiB, the server's --max-message)")
	fs.IntVar(&maxBuffered, "max-buffered", maxBuffered, "lines held while the server is unreachable before CMD's output is held up")
	cf := addClientFlags(fs)
	// Flags end at the command: its own flags are its own.
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return usageError{"run: want a command after -- (see buildlog run -h)"}
	}
	if template == "" {
		return usageError{"run: --template is required"}
	}
	if buildlog.Level(stderrLevel).Rank() < 0 {
		return usageError{fmt.Sprintf("--stderr-level %q: want debug, info, warn or error", stderrLevel)}
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	b, err := c.CreateBuild(ctx, template, client.NewBuild{BuildID: buildID})
	if err != nil {
		return err
	}
	id := b.ID
	fmt.Fprintf(stderr, "buildlog: build %s (follow it with: buildlog logs -f %s)\n", id, id)

	// The log outlives ctx: after Ctrl-C it still has to be delivered and
	// the build finished as cancelled.
	bg := context.WithoutCancel(ctx)
	notices := &rateLimited{w: stderr, every: 10 * time.Second}
	w, err := c.NewWriter(ctx, id, client.WriterOptions{
		MaxMessage:  int(maxMessage),
		MaxBuffered: maxBuffered,
		OnRetry: func(err error, _ time.Duration) {
			notices.printf("buildlog: %v; buffering the log and retrying", err)
		},
	})
	if err != nil {
		return err
	}
	var src = func(s string) *string { return &s }
	start := buildlog.Entry{Kind: buildlog.KindStart, Phase: phase, Source: src("buildlog"),
		Message: "$ " + shellQuote(argv)}
	logErr := &firstError{}
	logErr.set(w.Add(bg, start))

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = stdin
	// Off a terminal, CMD gets a process group of its own so that stopping
	// it stops what it started too (a shell's children hold its output
	// open). On a terminal it stays in ours: Ctrl-C reaches all of it
	// anyway, and it may read the terminal without being stopped (SIGTTIN).
	ownGroup := !isTerminal(stdin)
	if ownGroup {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	// Output still held open by something CMD left behind is waited for
	// this long after CMD exits.
	cmd.WaitDelay = 5 * time.Second
	outLines := &teeLines{pass: stdout, split: client.NewLineSplitter(int(maxMessage), func(line string) error {
		logErr.set(w.Add(bg, buildlog.Entry{Message: line, Phase: phase, Source: src("stdout")}))
		return nil
	})}
	errLines := &teeLines{pass: stderr, split: client.NewLineSplitter(int(maxMessage), func(line string) error {
		logErr.set(w.Add(bg, buildlog.Entry{Message: line, Phase: phase, Source: src("stderr"),
			Level: buildlog.Level(stderrLevel)}))
		return nil
	})}
	cmd.Stdout, cmd.Stderr = outLines, errLines

	runErr := cmd.Start()
	if runErr == nil {
		exited := make(chan struct{})
		go stopOnCancel(ctx, cmd.Process.Pid, ownGroup, killTimeout, exited)
		runErr = cmd.Wait()
		close(exited)
	}
	outLines.split.Close()
	errLines.split.Close()
	cancelled := ctx.Err() != nil
	code, finishMsg := exitCode(cmd.ProcessState, runErr, argv[0])
	if code == 127 {
		logErr.set(w.Add(bg, buildlog.Entry{Kind: buildlog.KindError, Level: buildlog.LevelError,
			Phase: phase, Source: src("buildlog"), Message: finishMsg}))
		fmt.Fprintf(stderr, "buildlog: %s\n", finishMsg)
	}

	fctx, cancel := context.WithTimeout(bg, flushTimeout)
	defer cancel()
	if err := w.Close(fctx); err != nil {
		logErr.set(err)
	}
	f := client.Finish{Status: buildlog.StatusReady, Result: json.RawMessage(fmt.Sprintf(`{"exit_code":%d}`, code))}
	switch {
	case cancelled:
		f.Status, f.Message = buildlog.StatusCancelled, "Build cancelled: "+finishMsg
	case code != 0:
		f.Status, f.Message = buildlog.StatusFailed, "Build failed: "+finishMsg
	}
	if _, err := c.Finish(fctx, id, f); err != nil {
		fmt.Fprintf(stderr, "buildlog: finishing build %s: %v\n", id, done(fctx, err))
	} else {
		fmt.Fprintf(stderr, "buildlog: build %s %s (%s)\n", id, f.Status, finishMsg)
	}
	if err := logErr.get(); err != nil {
		fmt.Fprintf(stderr, "buildlog: the log of build %s is incomplete: %v\n", id, done(fctx, err))
	}
	if code != 0 {
		return exitError(code)
	}
	return nil
}

// stopOnCancel stops CMD when ctx ends (Ctrl-C, SIGTERM): SIGTERM first,
// SIGKILL when it has not exited after grace.
func stopOnCancel(ctx context.Context, pid int, group bool, grace time.Duration, exited <-chan struct{}) {
	send := func(sig syscall.Signal) {
		if group {
			syscall.Kill(-pid, sig)
		} else {
			syscall.Kill(pid, sig)
		}
	}
	select {
	case <-exited:
		return
	case <-ctx.Done():
	}
	send(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
		send(syscall.SIGKILL)
	}
}

// exitCode is the status a shell would report for CMD, and words for it.
// ps is nil when CMD never started.
func exitCode(ps *os.ProcessState, err error, name string) (int, string) {
	if ps == nil {
		var ee *exec.Error
		if errors.As(err, &ee) {
			err = ee.Err
		}
		return 127, fmt.Sprintf("cannot run %s: %v", name, err)
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), "killed by " + ws.Signal().String()
	}
	return ps.ExitCode(), fmt.Sprintf("exit status %d", ps.ExitCode())
}

// teeLines passes CMD's output through at once (partial lines and all, so
// progress bars still draw) and cuts it into lines for the log.
type teeLines struct {
	pass  io.Writer
	split *client.LineSplitter
}

func (t *teeLines) Write(p []byte) (int, error) {
	// The terminal going away must not stop CMD or its log.
	t.pass.Write(p)
	return t.split.Write(p)
}

// firstError keeps the first of several errors.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// rateLimited prints at most one notice per interval, so an outage does
// not bury CMD's output in retry messages.
type rateLimited struct {
	mu    sync.Mutex
	w     io.Writer
	every time.Duration
	last  time.Time
}

func (r *rateLimited) printf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.last) < r.every {
		return
	}
	r.last = time.Now()
	fmt.Fprintf(r.w, format+"\n", args...)
}

// shellQuote renders argv as one would type it in sh.
func shellQuote(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
			out[i] = a
		} else {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}
