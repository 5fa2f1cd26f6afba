// Command buildlog is the build log server and its command-line client.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		fmt.Fprintln(os.Stderr, "buildlog:", err)
		os.Exit(1)
	}
}

// exitError ends the process with a status and no further message (the
// command has said what it had to).
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// usageError marks an error in the command line; main exits 2 for it.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

const usage = "buildlog stores the logs of template builds and streams them.\n\n" + commands + `
Each command takes -h for its flags and an example. The client commands
read the server from BUILDLOG_URL and the key from BUILDLOG_API_KEY (or,
when that is unset, BUILDLOG_ADMIN_KEY).

Environment: every serve flag is also BUILDLOG_<FLAG> (--idle-timeout is
BUILDLOG_IDLE_TIMEOUT); a flag on the command line wins.
`

// commands is the synopsis part of usage, which a mistake in the command
// name is answered with.
const commands = `Usage:
  buildlog serve [flags]                 run the server
  buildlog logs [-f] [--from N] BUILD_ID print (and follow) a build's log
  buildlog run --template T -- CMD...    run a command as a build
  buildlog builds ls|get                 list builds, show one
  buildlog keys create|ls|revoke         manage API keys
  buildlog webhooks create|ls|deliveries|delete
                                         manage webhooks (signed build events)
  buildlog bench [flags]                 measure a server on this machine
  buildlog copy-store --data DIR --store postgres://...
                                         copy the embedded store into PostgreSQL
`

// run is the whole program with its inputs injected, so tests can run it.
func run(ctx context.Context, args, env []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError(2)
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], env, stdout, stderr)
	case "logs":
		err = logsCmd(ctx, args[1:], env, stdout, stderr)
	case "run":
		err = runCmd(ctx, args[1:], env, stdin, stdout, stderr)
	case "builds":
		err = buildsCmd(ctx, args[1:], env, stdout, stderr)
	case "keys":
		err = keysCmd(ctx, args[1:], env, stdout, stderr)
	case "webhooks":
		err = webhooksCmd(ctx, args[1:], env, stdout, stderr)
	case "bench":
		err = benchCmd(ctx, args[1:], env, stdout, stderr)
	case "copy-store":
		err = copyStoreCmd(ctx, args[1:], env, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		what := "command"
		if strings.HasPrefix(args[0], "-") {
			// Flags belong to commands: buildlog itself takes only -h.
			what = "flag"
		}
		fmt.Fprintf(stderr, "buildlog: unknown %s %q\n\n%s\nRun 'buildlog -h' for more.\n", what, args[0], commands)
		return exitError(2)
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "buildlog:", ue.msg)
		return exitError(2)
	}
	return err
}
