package main

import (
	"encoding/json"
	"testing"
	"time"

	"buildlog"
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
