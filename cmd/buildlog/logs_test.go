package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/testkit"
)

func TestPrinterLine(t *testing.T) {
	// Lines show local time; pin it (TZ is read once, at the first use).
	local := time.Local
	time.Local = time.UTC
	defer func() { time.Local = local }()
	for _, tc := range []struct {
		entry string
		color bool
		want  string
	}{
		{`{"timestamp":"2026-03-17T00:00:12Z","kind":"message","level":"info","message":"Snapshot complete","phase":"snapshot","step_index":3,"total_steps":5}`,
			false, "00:00:12 [snapshot] step 3/5 Snapshot complete\n"},
		{`{"timestamp":"2026-03-17T01:00:12+01:00","kind":"retry","level":"warn","message":"again","attempt":2,"max_attempts":3}`,
			false, "00:00:12 attempt 2/3 WARN again\n"},
		{`{"timestamp":"2026-03-17T00:00:12Z","kind":"cache","level":"info","message":"","cache_status":"hit","cache_subject":"RUN npm ci"}`,
			false, "00:00:12 CACHED RUN npm ci\n"},
		{`{"timestamp":"2026-03-17T00:00:12Z","kind":"cache","level":"info","message":"layer","cache_status":"miss"}`,
			false, "00:00:12 cache miss layer\n"},
		{`{"timestamp":"2026-03-17T00:00:12Z","kind":"error","level":"error","message":"boom","phase":"boot"}`,
			true, "\x1b[2m00:00:12\x1b[0m \x1b[36m[boot]\x1b[0m \x1b[31mERROR boom\x1b[0m\n"},
		{`{"timestamp":"2026-03-17T00:00:12Z","kind":"end","level":"info","message":"Build ready"}`,
			true, "\x1b[2m00:00:12\x1b[0m \x1b[1m\x1b[32mBuild ready\x1b[0m\n"},
		{`{"timestamp":"not a time","kind":"message","level":"debug","message":"d"}`,
			false, "not a time d\n"},
	} {
		var e buildlog.Entry
		if err := json.Unmarshal([]byte(tc.entry), &e); err != nil {
			t.Fatal(err)
		}
		if got := string(printer{color: tc.color}.appendEntry(nil, &e)); got != tc.want {
			t.Errorf("%s:\ngot  %q\nwant %q", tc.entry, got, tc.want)
		}
	}
}

func TestColorMode(t *testing.T) {
	// A pipe is never a terminal; NO_COLOR only matters in auto.
	for _, tc := range []struct {
		mode colorMode
		env  []string
		want bool
	}{
		{"auto", nil, false},
		{"always", []string{"NO_COLOR=1"}, true},
		{"never", nil, false},
	} {
		if got := tc.mode.enabled(nil, tc.env); got != tc.want {
			t.Errorf("%s %v: %v", tc.mode, tc.env, got)
		}
	}
}

// `buildlog logs` of a build past a small cap on a real server: the
// dropped middle is one line, in text and from a start inside the range;
// with --json the notice as the server sends it.
func TestLogsOmission(t *testing.T) {
	addr := testkit.FreeAddr(t)
	p := startServe(t, addr, []string{"BUILDLOG_ADMIN_KEY=k"}, "--addr", addr, "--data", t.TempDir(),
		"--max-log-bytes", "4000", "--log-head-bytes", "1000")
	if code, body := p.do("POST", "/v1/templates/tmpl_1/builds", "k", `{"build_id":"tb_om"}`); code != 201 {
		t.Fatalf("%d %s", code, body)
	}
	var msgs []string
	for i := range 60 {
		var es []string
		for j := range 3 {
			m := fmt.Sprintf("line %03d", i*3+j)
			msgs = append(msgs, m)
			es = append(es, fmt.Sprintf(`{"message":%q}`, m))
		}
		if code, body := p.do("POST", "/v1/templates/builds/tb_om/logs", "k", "["+strings.Join(es, ",")+"]"); code != 200 {
			t.Fatalf("%d %s", code, body)
		}
	}
	if code, body := p.do("POST", "/v1/templates/builds/tb_om/finish", "k", `{"status":"ready"}`); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	_, body := p.do("GET", "/v1/templates/builds/tb_om", "k", "")
	var b struct{ Omitted *buildlog.Omitted }
	if err := json.Unmarshal(body, &b); err != nil || b.Omitted == nil {
		t.Fatalf("nothing omitted: %s", body)
	}
	om := b.Omitted
	env := []string{"BUILDLOG_URL=" + p.URL, "BUILDLOG_API_KEY=k", "TZ=UTC"}
	logsOut := func(args ...string) []string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if err := run(t.Context(), append([]string{"logs"}, args...), env, nil, &stdout, &stderr); err != nil {
			t.Fatalf("logs %v: %v\n%s", args, err, stderr.String())
		}
		return strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	}
	// The text: the head, one line for the range, the tail, the terminal
	// entry and the status line.
	check := func(from uint64, lines []string) {
		t.Helper()
		want := []string{}
		for off := from; off < uint64(len(msgs)); off++ {
			switch {
			case off < om.From || off > om.To:
				want = append(want, msgs[off])
			case off == max(from, om.From):
				n := om.To - off + 1
				bytes := om.Bytes
				if off > om.From {
					bytes = uint64(float64(om.Bytes) * float64(n) / float64(om.Entries))
				}
				want = append(want, fmt.Sprintf("── %s lines (%s) omitted ──", buildlog.Thousands(n), buildlog.HumanBytes(bytes)))
			}
		}
		if len(lines) != len(want)+2 {
			t.Fatalf("logs from %d: %d lines, want %d:\n%s", from, len(lines), len(want)+2, strings.Join(lines, "\n"))
		}
		for i, w := range want {
			if !strings.HasSuffix(lines[i], w) || (strings.HasPrefix(w, "──") && lines[i] != w) {
				t.Fatalf("logs from %d: line %d is %q, want %q", from, i, lines[i], w)
			}
		}
	}
	check(0, logsOut("tb_om"))
	check(om.From+3, logsOut("--from", fmt.Sprint(om.From+3), "tb_om"))
	// --level error keeps the notice and the terminal entry only.
	if got := logsOut("--level", "error", "tb_om"); len(got) != 3 || !strings.HasPrefix(got[0], "── ") {
		t.Fatalf("logs --level error: %q", got)
	}
	// --json: byte for byte what the server sends, the notice included.
	_, nd := p.do("GET", "/v1/templates/builds/tb_om/logs", "k", "", "Accept", "application/x-ndjson")
	if got := strings.Join(logsOut("--json", "tb_om"), "\n") + "\n"; got != string(nd) {
		t.Fatalf("logs --json:\n%s\nwant\n%s", got, nd)
	}
}
