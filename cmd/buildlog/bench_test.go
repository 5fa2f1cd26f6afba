package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"buildlog/internal/testkit"
)

// TestBenchQuick runs `buildlog bench --quick`, every scenario at tiny
// sizes, so the instrument keeps working; the figures are not checked
// (performance belongs to benchmarks, not tests), only that each scenario
// ran, verified its data (replay and fan-out check every offset) and made
// its rows.
func TestBenchQuick(t *testing.T) {
	stores := []struct{ name, dsn string }{{"sqlite", ""}}
	if dsn := os.Getenv("BUILDLOG_TEST_POSTGRES"); dsn != "" {
		stores = append(stores, struct{ name, dsn string }{"postgres", dsn})
	}
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			args := []string{"bench", "--quick", "--dir", t.TempDir(), "--serve-bin", binPath}
			if st.dsn != "" {
				args = append(args, "--store", st.dsn)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var out, errOut bytes.Buffer
			if err := run(ctx, args, nil, nil, &out, &errOut); err != nil {
				t.Fatalf("bench: %v\n%s\n%s", err, out.String(), errOut.String())
			}
			table := out.String()
			for _, want := range []string{
				"ingest         entries/s", "(file+fdatasync)",
				"single append  latency p50", "(fdatasync)",
				"replay         entries/s", "(bytes from memory)",
				"polling        lines/s",
				"fan-out        delivery p99", "RSS growth per follower, peak",
				"fan-out, deliveries: all ",
				"fleet          appends/s (16 builds × 10)", "append p99", "failed appends",
				"farm           delivery p99 (16 builds × 2 followers)", "server CPU per delivered event",
				"farm, deliveries: all ",
				"storage        bytes on disk, 1 finished build ", "(message text)",
				"a build writing", "(cap + one batch)",
			} {
				if !strings.Contains(table, want) {
					t.Errorf("table lacks %q:\n%s", want, table)
				}
			}
			if strings.Contains(table, "error") {
				t.Errorf("a scenario failed:\n%s\n%s", table, errOut.String())
			}
			if st.dsn != "" && !strings.Contains(table, "PostgreSQL") {
				t.Errorf("table does not say it measured PostgreSQL:\n%s", table)
			}
		})
	}
}

// TestBenchURL measures a server the bench did not start, as a user sizing
// a deployment would: through --url and an admin --key, with the
// followers spread over read keys the bench makes and revokes.
func TestBenchURL(t *testing.T) {
	addr := testkit.FreeAddr(t)
	srv := startServe(t, addr, []string{"BUILDLOG_ADMIN_KEY=admin-secret"}, "--addr", addr, "--data", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	args := []string{"bench", "--quick", "--dir", t.TempDir(), "--url", srv.URL, "--followers", "600"}
	if err := run(ctx, args, []string{"BUILDLOG_API_KEY=admin-secret"}, nil, &out, &errOut); err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{"the server at " + srv.URL, "replay         entries/s", "fan-out, deliveries: all ",
		"fleet          appends/s", "farm, deliveries: all "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	// The follower keys are revoked: only none are left besides the admin
	// key from the environment, which is not stored.
	code, body := srv.do("GET", "/v1/keys", "admin-secret", "")
	if code != 200 || strings.Contains(string(body), "bench-follower") {
		t.Errorf("GET /v1/keys after the bench: %d %s", code, body)
	}
}

// TestBenchFleet runs the fleet scenario in its single-entry shape (one
// build, one entry an append: the latency target's), beside a private
// Redis when redis-server is installed, and without one when told; only
// that the figures are printed is checked, never their values.
func TestBenchFleet(t *testing.T) {
	_, lookErr := exec.LookPath("redis-server")
	for _, tc := range []struct {
		name  string
		args  []string
		redis bool
	}{
		{"single-entry", []string{"--builds", "1", "--batch", "1"}, lookErr == nil},
		{"no-redis", []string{"--builds", "4", "--batch", "3", "--redis", "none"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			args := append([]string{"bench", "--scenario", "fleet", "--quick", "--fleet-duration", "300ms",
				"--dir", tmp, "--serve-bin", binPath}, tc.args...)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var out, errOut bytes.Buffer
			if err := run(ctx, args, nil, nil, &out, &errOut); err != nil {
				t.Fatalf("bench: %v\n%s\n%s", err, out.String(), errOut.String())
			}
			table := out.String()
			wants := []string{"appends/s (", "entries/s", "append p50", "append p99", "failed appends (retried)"}
			if tc.name == "single-entry" {
				wants = append(wants, "appends/s (1 build × 1)", "≤ 0.5 ms")
			}
			if tc.redis {
				wants = append(wants, "(Redis durable)", "buildlog/Redis appends/s by round: ")
			} else {
				wants = append(wants, "fleet, Redis comparison: skipped")
			}
			for _, want := range wants {
				if !strings.Contains(table, want) {
					t.Errorf("table lacks %q:\n%s", want, table)
				}
			}
			if strings.Contains(table, "error") || strings.Contains(table, "ingest") {
				t.Errorf("a scenario failed, or another ran:\n%s\n%s", table, errOut.String())
			}
			// The Redis the bench started is gone with its directory, and
			// so is everything else the bench made.
			if left, _ := os.ReadDir(tmp); len(left) > 0 {
				t.Errorf("the bench left %v in --dir", left)
			}
		})
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--only", "ingest,nope"},
		{"bench", "--url", "http://127.0.0.1:1"}, // no key
		{"bench", "--poll-limit", "20000"},
		{"bench", "--scenario", "fleet", "--batch", "20000"},
		{"bench", "--scenario", "flee"},
		{"bench", "extra"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, nil, nil, &out, &errOut)
		var code exitError
		if !errors.As(err, &code) || code != 2 {
			t.Errorf("%q: got %v, want exit status 2\n%s", args, err, errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"bench", "-h"}, nil, nil, &out, &errOut); err != nil {
		t.Fatalf("bench -h: %v", err)
	}
	if !strings.Contains(errOut.String(), "buildlog bench --quick") || !strings.Contains(errOut.String(), "-followers") {
		t.Errorf("bench -h lacks the example or the flags:\n%s", errOut.String())
	}
}
