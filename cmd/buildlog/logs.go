package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"buildlog"
	"buildlog/client"
	"buildlog/internal/wire"
)

const logsUsage = `Usage: buildlog logs [-f] [--from N | --tail N] [--level L] [--json] BUILD_ID

Prints a build's log, one entry a line: time, [phase], step i/n, the level
when it is warn or error, and the message; then a status line with the
build's duration. Where the server's size cap dropped the middle of a
long log, one line says how much: ── 18,204 lines (96.1 MiB) omitted ──.
With -f it follows the build live until it ends,
reconnecting through dropped connections and server restarts without
losing or repeating a line.

Examples:
  buildlog logs -f 2b0c5f7e-31d5-4c4e-9f3e-8f7c4a1d9e20
  buildlog logs --tail 20 --level warn tb_123
  buildlog logs --json tb_123 | jq -r .message

Exit status: 0 when printed (with -f: when the build ended ready);
with -f, 3 if it failed, 4 if cancelled, 5 if timed out; 1 on an error;
2 on a usage mistake; 130 when interrupted.
`

func logsCmd(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	return done(ctx, logs(ctx, args, env, stdout, stderr))
}

func logs(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("logs", logsUsage, stderr)
	var (
		follow      bool
		from, tail  string
		level       string
		jsonOut     bool
		color       = colorMode("auto")
		interactive bool
	)
	fs.BoolVar(&follow, "f", false, "follow the log until the build ends")
	fs.BoolVar(&follow, "follow", false, "same as -f")
	fs.StringVar(&from, "from", "", "first `offset` to print (default 0)")
	fs.StringVar(&tail, "tail", "", "print only the last `N` entries (then follow with -f)")
	fs.StringVar(&level, "level", "", "minimum `level`: debug, info, warn or error")
	fs.BoolVar(&jsonOut, "json", false, "print canonical entry JSON, one a line (NDJSON), and no status line")
	fs.Var(&color, "color", "colour levels: auto (on a terminal without NO_COLOR), always or never")
	cf := addClientFlags(fs)
	id, err := parseOneArg(fs, args, "logs: want one BUILD_ID (see buildlog logs -h)")
	if err != nil {
		return err
	}
	o := client.StreamOptions{Follow: follow}
	if !follow {
		// Without -f a dead server is an error, not something to wait out.
		o.MaxRetries = 3
	}
	if from != "" && tail != "" {
		return usageError{"logs: give --from or --tail, not both"}
	}
	if from != "" {
		if o.From, err = strconv.ParseUint(from, 10, 64); err != nil {
			return usageError{fmt.Sprintf("--from %q: want an offset, an unsigned integer", from)}
		}
	}
	if tail != "" {
		n, err := strconv.Atoi(tail)
		if err != nil || n < 0 {
			return usageError{fmt.Sprintf("--tail %q: want a number of entries", tail)}
		}
		o.Tail = n
		if n == 0 {
			o.Tail = -1 // only what comes next
		}
	}
	if level != "" {
		if buildlog.Level(level).Rank() < 0 {
			return usageError{fmt.Sprintf("--level %q: want debug, info, warn or error", level)}
		}
		o.Level = buildlog.Level(level)
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	interactive = color.enabled(stdout, env)
	o.OnReconnect = func(err error, wait time.Duration) {
		fmt.Fprintf(stderr, "buildlog: %s; reconnecting in %s\n", reason(err), shortDuration(wait))
	}

	out := bufio.NewWriterSize(stdout, 32<<10)
	defer out.Flush()
	p := printer{color: interactive}
	var last *buildlog.Entry
	var buf []byte
	for e, err := range c.Stream(ctx, id, o) {
		if err != nil {
			out.Flush()
			return err
		}
		if jsonOut {
			buf = wire.AppendEntry(buf[:0], &e)
			buf = append(buf, '\n')
		} else if om, ok := client.OmissionOf(&e); ok {
			buf = p.appendOmission(buf[:0], om)
		} else {
			buf = p.appendEntry(buf[:0], &e)
		}
		out.Write(buf)
		if e.Terminal() {
			last = &e
		}
		// Flush as lines arrive when following or when nothing more is
		// buffered, so a follower sees each line at once.
		if follow {
			if err := out.Flush(); err != nil {
				return err
			}
		}
	}
	if err := out.Flush(); err != nil {
		return err
	}

	// The status line, and with -f the exit status, come from the build.
	b, err := c.Build(ctx, id)
	if err != nil && last == nil {
		return err
	}
	status := buildlog.StatusBuilding
	if b != nil {
		status = b.Status
	} else {
		status = statusOfTerminal(last)
	}
	if !jsonOut {
		fmt.Fprintln(out, p.statusLine(id, status, b))
	}
	out.Flush()
	if !follow {
		return nil
	}
	switch status {
	case buildlog.StatusReady:
		return nil
	case buildlog.StatusCancelled:
		return exitError(exitCancelled)
	case buildlog.StatusTimeout:
		return exitError(exitTimeout)
	default:
		return exitError(exitFailed)
	}
}

// statusOfTerminal guesses a finished build's status from its terminal
// entry, for when the build itself cannot be read any more.
func statusOfTerminal(e *buildlog.Entry) buildlog.Status {
	switch {
	case e.Kind == buildlog.KindCancelled:
		return buildlog.StatusCancelled
	case e.Level != buildlog.LevelError:
		return buildlog.StatusReady
	case strings.Contains(strings.ToLower(e.Message), "timed out"):
		return buildlog.StatusTimeout
	}
	return buildlog.StatusFailed
}

// reason is why a stream broke, for the reconnect notice.
func reason(err error) string {
	if err == client.ErrStreamEnded {
		return "the server ended the stream"
	}
	if be, ok := err.(*buildlog.Error); ok {
		return "the server answered: " + be.Message
	}
	return err.Error()
}

// ANSI SGR colours.
const (
	sgrReset  = "\x1b[0m"
	sgrDim    = "\x1b[2m"
	sgrBold   = "\x1b[1m"
	sgrRed    = "\x1b[31m"
	sgrGreen  = "\x1b[32m"
	sgrYellow = "\x1b[33m"
	sgrCyan   = "\x1b[36m"
)

// printer renders entries the way docker build's plain progress does:
// one line each, prefixed with what the entry says about its place in
// the build.
type printer struct{ color bool }

func (p printer) paint(dst []byte, sgr, s string) []byte {
	if !p.color || s == "" {
		return append(dst, s...)
	}
	return append(append(append(dst, sgr...), s...), sgrReset...)
}

// appendEntry appends e as one text line: time (local, to the second),
// [phase], step i/n, attempt a/m, cache status, level (warn and error
// only), message.
func (p printer) appendEntry(dst []byte, e *buildlog.Entry) []byte {
	ts := e.Timestamp
	if t, err := time.Parse(time.RFC3339Nano, e.Timestamp); err == nil {
		ts = t.Local().Format("15:04:05")
	}
	dst = p.paint(dst, sgrDim, ts)
	dst = append(dst, ' ')
	if e.Phase != "" {
		dst = p.paint(dst, sgrCyan, "["+e.Phase+"]")
		dst = append(dst, ' ')
	}
	if e.StepIndex != nil && e.TotalSteps != nil {
		dst = fmt.Appendf(dst, "step %d/%d ", *e.StepIndex, *e.TotalSteps)
	} else if e.StepIndex != nil {
		dst = fmt.Appendf(dst, "step %d ", *e.StepIndex)
	}
	if e.Attempt != nil && e.MaxAttempts != nil {
		dst = fmt.Appendf(dst, "attempt %d/%d ", *e.Attempt, *e.MaxAttempts)
	}
	switch e.CacheStatus {
	case "":
	case "hit":
		dst = p.paint(dst, sgrGreen, "CACHED")
		dst = append(dst, ' ')
	default:
		dst = append(dst, "cache "+e.CacheStatus+" "...)
	}
	msg := e.Message
	if msg == "" && e.CacheSubject != nil {
		msg = *e.CacheSubject
	}
	switch {
	case e.Terminal() && e.Level == buildlog.LevelError:
		dst = p.paint(dst, sgrBold+sgrRed, msg)
	case e.Terminal():
		dst = p.paint(dst, sgrBold+sgrGreen, msg)
	case e.Level == buildlog.LevelError:
		dst = p.paint(dst, sgrRed, "ERROR "+msg)
	case e.Level == buildlog.LevelWarn:
		dst = p.paint(dst, sgrYellow, "WARN "+msg)
	case e.Level == buildlog.LevelDebug:
		dst = p.paint(dst, sgrDim, msg)
	default:
		dst = append(dst, msg...)
	}
	return append(dst, '\n')
}

// appendOmission appends the line that stands for what the server's size
// cap dropped: "── 18,204 lines (96.1 MiB) omitted ──".
func (p printer) appendOmission(dst []byte, om client.Omission) []byte {
	s := fmt.Sprintf("── %s lines (%s) omitted ──", buildlog.Thousands(om.Entries), buildlog.HumanBytes(om.Bytes))
	return append(p.paint(dst, sgrYellow, s), '\n')
}

// statusLine sums the build up: its status and how long it ran.
func (p printer) statusLine(id string, status buildlog.Status, b *buildlog.Build) string {
	var s string
	switch {
	case b == nil:
		s = fmt.Sprintf("==> build %s %s", id, status)
	case status.Terminal():
		s = fmt.Sprintf("==> build %s %s in %s", id, status, shortDuration(client.Duration(b, time.Now())))
	default:
		s = fmt.Sprintf("==> build %s %s for %s so far (%d entries)", id, status,
			shortDuration(client.Duration(b, time.Now())), b.NextOffset)
	}
	switch {
	case !p.color:
		return s
	case status == buildlog.StatusReady:
		return sgrBold + sgrGreen + s + sgrReset
	case status.Terminal():
		return sgrBold + sgrRed + s + sgrReset
	}
	return sgrBold + s + sgrReset
}
