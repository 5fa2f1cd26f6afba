package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"

	"buildlog"
	"buildlog/client"
)

// Exit statuses of the client commands (docs/CLI.md lists them).
const (
	exitFailure     = 1   // an error: the server refused, or could not be reached
	exitUsage       = 2   // a mistake in the command line
	exitFailed      = 3   // logs -f: the build failed
	exitCancelled   = 4   // logs -f: the build was cancelled
	exitTimeout     = 5   // logs -f: the build timed out
	exitInterrupted = 130 // Ctrl-C or SIGTERM, as shells report SIGINT
)

const defaultURL = "http://127.0.0.1:8080"

// clientFlags are the flags every client command takes.
type clientFlags struct {
	url, key string
}

func addClientFlags(fs *flag.FlagSet) *clientFlags {
	cf := &clientFlags{}
	fs.StringVar(&cf.url, "url", "", "server URL (default $BUILDLOG_URL, else "+defaultURL+")")
	fs.StringVar(&cf.key, "api-key", "", "API key (default $BUILDLOG_API_KEY, else $BUILDLOG_ADMIN_KEY)")
	return cf
}

// client makes the API client, taking what the flags left out from the
// environment: BUILDLOG_URL, and the key from BUILDLOG_API_KEY or, when
// that is unset, BUILDLOG_ADMIN_KEY, so that the operator who started the
// server with an admin key can use the CLI beside it without copying the
// key into a second variable. The other BUILDLOG_* variables configure
// serve and must not change what a client command does.
func (cf *clientFlags) client(env []string) (*client.Client, error) {
	url := cf.url
	if url == "" {
		url = getenv(env, "BUILDLOG_URL")
	}
	if url == "" {
		url = defaultURL
	}
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		return nil, usageError{fmt.Sprintf("server URL %q: want http://host:port or https://...", url)}
	}
	key, err := cf.apiKey(env)
	if err != nil {
		return nil, err
	}
	return client.New(url, key, nil), nil
}

// apiKey is --api-key, else BUILDLOG_API_KEY, else BUILDLOG_ADMIN_KEY.
func (cf *clientFlags) apiKey(env []string) (string, error) {
	key := cf.key
	if key == "" {
		key = getenv(env, "BUILDLOG_API_KEY")
	}
	if key == "" {
		key = getenv(env, "BUILDLOG_ADMIN_KEY")
	}
	if key == "" {
		return "", usageError{"no API key: set BUILDLOG_API_KEY (or BUILDLOG_ADMIN_KEY) or pass --api-key"}
	}
	return key, nil
}

// newFlagSet is a flag set whose -h prints usage (a synopsis, a description
// with an example) and then the flags.
func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		if !strings.HasSuffix(usage, ":\n") { // a usage may name its flags' heading itself
			fmt.Fprint(stderr, "\nFlags:\n")
		}
		printDefaults(fs)
	}
	return fs
}

// parseCommand parses the flags of a command that takes no arguments and
// then, when env is given, BUILDLOG_<FLAG> for each flag not given. help
// is true when -h was asked for: its usage is printed, and the command
// has nothing more to do.
func parseCommand(fs *flag.FlagSet, args, env []string) (help bool, err error) {
	if err := parseFlagsOnly(fs, args); err != nil {
		if errors.Is(err, errHelp) {
			return true, nil
		}
		return false, err
	}
	if env != nil {
		return false, envFlags(fs, env)
	}
	return false, nil
}

// printDefaults is fs.PrintDefaults without the flag package's own
// "(default …)" on flags whose usage already states the default in words:
// durations and sizes would otherwise read "(default 1m) (default 1m0s)".
func printDefaults(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		if strings.Contains(f.Usage, "(default") {
			f.DefValue = zeroString(f.Value)
		}
	})
	fs.PrintDefaults()
}

// zeroString is what the zero value of v's type prints: the flag package
// leaves out the default of a flag whose DefValue is that.
func zeroString(v flag.Value) (s string) {
	defer func() {
		if recover() != nil {
			s = ""
		}
	}()
	t := reflect.TypeOf(v)
	var z reflect.Value
	if t.Kind() == reflect.Pointer {
		z = reflect.New(t.Elem())
	} else {
		z = reflect.Zero(t)
	}
	return z.Interface().(flag.Value).String()
}

// parseFlags parses args with fs. A mistake is one line naming it and
// pointing at -h (exit 2), not the whole help; -h prints the help and is
// errHelp.
func parseFlags(fs *flag.FlagSet, args []string) error {
	out, usage := fs.Output(), fs.Usage
	// The flag package prints its error and then the usage; both are
	// printed here instead, the usage only when asked for.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		if usage != nil {
			usage()
		} else {
			fs.PrintDefaults()
		}
		return errHelp
	}
	fmt.Fprintf(out, "buildlog %s: %v (see buildlog %s -h)\n", fs.Name(), err, fs.Name())
	return exitError(exitUsage)
}

// parseArgs parses flags given before, between or after the positional
// arguments (`logs BUILD_ID -f` works as `logs -f BUILD_ID`); everything
// after "--" is positional. -h is errHelp; a bad flag, reported in one
// line by parseFlags, exits 2.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseFlagsOnly parses the flags of a command that takes no positional
// arguments (serve, bench, copy-store). -h is errHelp; a bad flag,
// reported in one line by parseFlags, exits 2.
func parseFlagsOnly(fs *flag.FlagSet, args []string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("%s takes no arguments, got %q", fs.Name(), fs.Args())}
	}
	return nil
}

// parseOneArg parses args as parseArgs does, for a command that takes one
// positional argument, and returns it; any other count is the usage error
// msg.
func parseOneArg(fs *flag.FlagSet, args []string, msg string) (string, error) {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", usageError{msg}
	}
	return pos[0], nil
}

// subcommands runs a command made of subcommands (builds, keys,
// webhooks): run is given the one args[0] names, which must be in subs,
// and the arguments after it. With none the usage is printed and the exit
// is 2; -h prints the usage and succeeds; an unknown one is a usage error
// that says what is wanted.
func subcommands(ctx context.Context, name, usage, want string, subs []string, args []string, stderr io.Writer, run func(sub string, args []string) error) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError(exitUsage)
	}
	var err error
	switch sub := args[0]; {
	case slices.Contains(subs, sub):
		err = run(sub, args[1:])
	case sub == "-h" || sub == "--help" || sub == "help":
		fmt.Fprint(stderr, usage)
		return nil
	default:
		err = usageError{fmt.Sprintf("%s: unknown command %q: want %s", name, sub, want)}
	}
	return done(ctx, err)
}

// listTime is how listings show a time: local, to the second.
const listTime = "2006-01-02 15:04:05"

// writeList prints a listing: with jsonOut as {name: [...]}, as the API
// returns it (an empty list, not null), otherwise as a table, header
// then a line of row for each item.
func writeList[T any](w io.Writer, jsonOut bool, name string, items []T, header string, row func(T) string) error {
	if jsonOut {
		if items == nil {
			items = []T{}
		}
		return writeJSONOut(w, map[string]any{name: items})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, it := range items {
		fmt.Fprintln(tw, row(it))
	}
	return tw.Flush()
}

// errHelp ends a command that printed its help: exit 0.
var errHelp = errors.New("help shown")

// done finishes a client command: help is success, and errors become the
// one line main prints (the server's message, without its code).
func done(ctx context.Context, err error) error {
	switch {
	case err == nil, errors.Is(err, errHelp):
		return nil
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return exitError(exitInterrupted)
	}
	var ee exitError
	var ue usageError
	if errors.As(err, &ee) || errors.As(err, &ue) {
		return err
	}
	var be *buildlog.Error
	if errors.As(err, &be) {
		return errors.New(be.Message)
	}
	return err
}

// colorMode is --color: auto (on a terminal, unless NO_COLOR is set),
// always or never.
type colorMode string

func (m *colorMode) String() string { return string(*m) }
func (m *colorMode) Set(s string) error {
	switch s {
	case "auto", "always", "never":
		*m = colorMode(s)
		return nil
	}
	return errors.New("want auto, always or never")
}

// enabled decides colour for out. NO_COLOR (https://no-color.org) is
// honoured when set to anything non-empty.
func (m colorMode) enabled(out io.Writer, env []string) bool {
	switch m {
	case "always":
		return true
	case "never":
		return false
	}
	return getenv(env, "NO_COLOR") == "" && isTerminal(out)
}

// isTerminal reports whether rw (a reader or writer) is a terminal, not
// a pipe, a file or /dev/null.
func isTerminal(rw any) bool {
	f, ok := rw.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}

// shortDuration rounds d for people: ms under a minute, seconds above.
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}
