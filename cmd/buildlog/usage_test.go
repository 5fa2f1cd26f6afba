package main

import (
	"buildlog/client"
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"buildlog"
)

// runCLI runs the program in-process and returns its exit status and
// stderr.
func runCLI(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, env, strings.NewReader(""), &stdout, &stderr)
	code := 0
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = int(ee)
	default:
		code = 1
		stderr.WriteString("buildlog: " + err.Error() + "\n")
	}
	return code, stdout.String(), stderr.String()
}

// A flag before any command is a flag, and says so, with the commands
// (not the whole help) to choose from.
func TestUnknownTopLevelFlag(t *testing.T) {
	code, _, stderr := runCLI(t, nil, "--bogus")
	if code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	if !strings.HasPrefix(stderr, `buildlog: unknown flag "--bogus"`+"\n") {
		t.Errorf("stderr starts %q, want the unknown flag named", firstLine(stderr))
	}
	if !strings.Contains(stderr, "buildlog logs [-f]") || strings.Contains(stderr, "Environment:") {
		t.Errorf("want the command synopsis and not the whole help:\n%s", stderr)
	}
	_, _, stderr = runCLI(t, nil, "bogus")
	if !strings.HasPrefix(stderr, `buildlog: unknown command "bogus"`) {
		t.Errorf("stderr starts %q, want the unknown command named", firstLine(stderr))
	}
}

// A wrong flag of a command is one line that names it and points at -h,
// not the command's whole help.
func TestUnknownCommandFlag(t *testing.T) {
	for _, args := range [][]string{
		{"logs", "--bogus", "b1"},
		{"run", "--bogus", "--", "true"},
		{"builds", "ls", "--bogus"},
		{"keys", "create", "--bogus"},
		{"webhooks", "ls", "--bogus"},
		{"serve", "--bogus"},
		{"copy-store", "--bogus"},
		{"run", "--kill-timeout", "soon", "--", "true"},
	} {
		code, _, stderr := runCLI(t, nil, args...)
		if code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], "-h)") || strings.Contains(stderr, "Usage:") {
			t.Errorf("%q: stderr\n%s\nwant one line with a hint to -h", args, stderr)
		}
	}
	_, _, stderr := runCLI(t, nil, "keys", "create", "--bogus")
	if want := "buildlog keys create: flag provided but not defined: -bogus (see buildlog keys create -h)\n"; stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
}

// -h shows each default once: the usage's own words, not those and then
// the flag package's "(default 1m0s)".
func TestHelpDefaultsOnce(t *testing.T) {
	for _, args := range [][]string{{"run", "-h"}, {"serve", "-h"}, {"logs", "-h"}, {"bench", "-h"}} {
		code, _, stderr := runCLI(t, nil, args...)
		if code != 0 {
			t.Errorf("%q: exit %d", args, code)
		}
		for _, line := range strings.Split(stderr, "\n") {
			if strings.Count(line, "(default") > 1 {
				t.Errorf("%q: %q", args, strings.TrimSpace(line))
			}
		}
		if !strings.Contains(stderr, "Flags") {
			t.Errorf("%q: no flags listed:\n%s", args, stderr)
		}
	}
	_, _, stderr := runCLI(t, nil, "run", "-h")
	if !strings.Contains(stderr, "(default 1m)\n") || !strings.Contains(stderr, `(default "warn")`) {
		t.Errorf("run -h lost a default:\n%s", stderr)
	}
}

// The CLI takes BUILDLOG_ADMIN_KEY when BUILDLOG_API_KEY is unset; the
// flag and BUILDLOG_API_KEY win over it.
func TestClientKeyFromEnv(t *testing.T) {
	for _, tc := range []struct {
		flag string
		env  []string
		want string // "" for the no-key error
	}{
		{"", []string{"BUILDLOG_ADMIN_KEY=adm"}, "adm"},
		{"", []string{"BUILDLOG_ADMIN_KEY=adm", "BUILDLOG_API_KEY=api"}, "api"},
		{"flag", []string{"BUILDLOG_ADMIN_KEY=adm", "BUILDLOG_API_KEY=api"}, "flag"},
		{"", []string{"BUILDLOG_ADMIN_KEY=", "BUILDLOG_API_KEY="}, ""},
	} {
		cf := &clientFlags{key: tc.flag}
		got, err := cf.apiKey(tc.env)
		if tc.want == "" {
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(ue.msg, "BUILDLOG_ADMIN_KEY") {
				t.Errorf("%v: %v, want the no-key usage error naming both variables", tc.env, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("flag %q, env %v: key %q, %v; want %q", tc.flag, tc.env, got, err, tc.want)
		}
	}
}

// A build's duration is its own created_at to finished_at, as the console
// shows it, not from its first append (started_at).
func TestBuildDuration(t *testing.T) {
	created := time.Date(2026, 3, 17, 0, 0, 0, 0, time.UTC)
	started, finished := created.Add(200*time.Millisecond), created.Add(4010*time.Millisecond)
	b := &buildlog.Build{ID: "b1", Status: buildlog.StatusReady, CreatedAt: created, StartedAt: &started, FinishedAt: &finished}
	if got, want := client.Duration(b, finished.Add(time.Hour)), 4010*time.Millisecond; got != want {
		t.Errorf("finished build: %s, want %s", got, want)
	}
	if got, want := (printer{}).statusLine("b1", b.Status, b), "==> build b1 ready in 4.01s"; got != want {
		t.Errorf("status line %q, want %q", got, want)
	}
	running := &buildlog.Build{ID: "b2", Status: buildlog.StatusBuilding, CreatedAt: created, StartedAt: &started}
	if got, want := client.Duration(running, created.Add(time.Minute)), time.Minute; got != want {
		t.Errorf("running build: %s, want %s", got, want)
	}
}

// --json output keeps "<" and ">" as they are.
func TestJSONOutNotHTMLEscaped(t *testing.T) {
	var buf bytes.Buffer
	if err := writeJSONOut(&buf, map[string]string{"message": "a <key> & b"}); err != nil {
		t.Fatal(err)
	}
	if want := "{\n  \"message\": \"a <key> & b\"\n}\n"; buf.String() != want {
		t.Errorf("got %q, want %q", buf.String(), want)
	}
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }
