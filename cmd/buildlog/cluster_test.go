package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"buildlog/internal/postgres"
	"buildlog/internal/sse"
	"buildlog/internal/testkit"
)

// freshDatabase creates a database for this test on the server
// BUILDLOG_TEST_POSTGRES names, dropped when the test ends (after the
// servers using it have been killed: cleanups run last first), and returns
// its DSN.
func freshDatabase(t *testing.T) string {
	t.Helper()
	admin := os.Getenv("BUILDLOG_TEST_POSTGRES")
	if admin == "" {
		t.Skip("BUILDLOG_TEST_POSTGRES is unset: set it to a DSN of a server where tests may create databases")
	}
	dsn, drop, err := postgres.CreateDatabase(context.Background(), admin, "buildlog_e2e_")
	if err != nil {
		t.Fatalf("BUILDLOG_TEST_POSTGRES: %v", err)
	}
	t.Cleanup(func() {
		if err := drop(); err != nil {
			t.Error(err)
		}
	})
	return dsn
}

// sseFollower reads one stream to its end in the background.
type sseFollower struct {
	events chan []sse.Event
	errc   chan error
}

// followSSE opens path on p and collects its events until the stream ends.
func followSSE(t *testing.T, p *proc, path, key string, hdr ...string) *sseFollower {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	req, _ := testkit.NewRequest(ctx, "GET", p.URL+path, key, nil, hdr...)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		t.Fatalf("GET %s: %d %s", path, res.StatusCode, b)
	}
	f := &sseFollower{events: make(chan []sse.Event, 1), errc: make(chan error, 1)}
	go func() {
		defer res.Body.Close()
		evs, err := testkit.Events(sse.NewReader(res.Body))
		if err != nil {
			f.errc <- fmt.Errorf("GET %s: %w", path, err)
			return
		}
		f.events <- evs
	}()
	return f
}

// wait returns the follower's events once its stream has ended.
func (f *sseFollower) wait(t *testing.T) []sse.Event {
	t.Helper()
	select {
	case evs := <-f.events:
		return evs
	case err := <-f.errc:
		t.Fatal(err)
	case <-time.After(30 * time.Second):
		t.Fatal("stream still open 30s after the build finished")
	}
	return nil
}

// TestTwoServersOnePostgres runs two real `buildlog serve` processes on one
// fresh database: the producer writes to the first, followers of both
// dialects read from the second, and their streams end with the terminal
// entry when the first finishes the build.
func TestTwoServersOnePostgres(t *testing.T) {
	dsn := freshDatabase(t)
	env := []string{"BUILDLOG_ADMIN_KEY=k", "BUILDLOG_STORE=" + dsn}
	a1, a2 := testkit.FreeAddr(t), testkit.FreeAddr(t)
	// No keepalives: a keepalive makes a follower look at the store again,
	// which would hide a missed cross-server wake-up.
	one := startServe(t, a1, env, "--addr", a1, "--keepalive", "1h")
	two := startServe(t, a2, env, "--addr", a2, "--keepalive", "1h")

	if code, body := one.do("POST", "/v1/templates/tmpl_1/builds", "k",
		`{"build_id":"tb_e2e","namespace":"acme","name":"img","version":"1.0.0"}`); code != 201 {
		t.Fatalf("create on server 1: %d %s", code, body)
	}
	// The second server sees the build at once: one database.
	if code, body := two.do("GET", "/v1/templates/builds/tb_e2e", "k", ""); code != 200 {
		t.Fatalf("build on server 2: %d %s", code, body)
	}

	logs := "/v1/templates/builds/tb_e2e/logs?follow=true"
	followers := []*sseFollower{
		followSSE(t, two, logs, "k"),
		followSSE(t, two, logs, "k"),
		followSSE(t, two, logs+"&offset=0", "k"),
	}
	events := followSSE(t, two, "/templates/acme/img/1.0.0/build/events", "k")

	const batches, size = 20, 50
	for i := range batches {
		var sb strings.Builder
		sb.WriteString(`{"first_offset":` + strconv.Itoa(i*size) + `,"entries":[`)
		for j := range size {
			if j > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"message":"line %d","phase":"install","source":"apt"}`, i*size+j)
		}
		sb.WriteString("]}")
		body := sb.String()
		want := fmt.Sprintf(`{"first_offset":%d,"next_offset":%d}`, i*size, (i+1)*size)
		code, got := one.do("POST", "/v1/templates/builds/tb_e2e/logs", "k", body)
		if code != 200 || strings.TrimSpace(string(got)) != want {
			t.Fatalf("append %d on server 1: %d %s, want %s", i, code, got, want)
		}
		if i == batches/2 {
			// A retry of a batch whose reply was lost, sent to the other
			// server, answers as the first time and stores nothing.
			code, got := two.do("POST", "/v1/templates/builds/tb_e2e/logs", "k", body)
			if code != 200 || strings.TrimSpace(string(got)) != want {
				t.Fatalf("retry on server 2: %d %s, want %s", code, got, want)
			}
			// A follower joining mid-build on server 2, by Last-Event-ID.
			followers = append(followers, followSSE(t, two, logs, "k", "Last-Event-ID", "99"))
		}
	}
	const total = batches * size
	if code, body := one.do("POST", "/v1/templates/builds/tb_e2e/finish", "k", `{"status":"ready"}`); code != 200 {
		t.Fatalf("finish on server 1: %d %s", code, body)
	}

	for i, f := range followers {
		evs := f.wait(t)
		from := 0
		if i == 3 {
			from = 100
		}
		if len(evs) != total+1-from {
			t.Fatalf("follower %d got %d events, want %d", i, len(evs), total+1-from)
		}
		for j, ev := range evs {
			var e struct {
				Offset  int    `json:"offset"`
				Kind    string `json:"kind"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(ev.Data, &e); err != nil {
				t.Fatalf("follower %d event %d: %s", i, j, ev.Data)
			}
			off := from + j
			if ev.ID != strconv.Itoa(off) || e.Offset != off {
				t.Fatalf("follower %d event %d: id %s offset %d, want %d", i, j, ev.ID, e.Offset, off)
			}
			switch {
			case off == total && e.Kind != "end":
				t.Fatalf("follower %d: last event is %s, want the terminal entry", i, ev.Data)
			case off < total && e.Message != "line "+strconv.Itoa(off):
				t.Fatalf("follower %d: offset %d carries %q", i, off, e.Message)
			}
		}
	}

	frames := events.wait(t)
	if len(frames) != total+1 {
		t.Fatalf("dialect B got %d frames, want %d", len(frames), total+1)
	}
	var last struct{ Level, Phase string }
	json.Unmarshal(frames[total].Data, &last)
	if frames[total].ID != strconv.Itoa(total) || last.Level != "success" || last.Phase != "ready" {
		t.Fatalf("dialect B last frame: id %s %s, want level success, phase ready", frames[total].ID, frames[total].Data)
	}

	// Both servers agree on the finished build; a resume past its end is
	// the 204 that stops an EventSource.
	for i, p := range []*proc{one, two} {
		_, body := p.do("GET", "/v1/templates/builds/tb_e2e", "k", "")
		if b := mustJSON(t, body); b["status"] != "ready" || b["next_offset"] != float64(total+1) {
			t.Errorf("server %d: build %s", i+1, body)
		}
	}
	if code, body := two.do("GET", logs, "k", "", "Last-Event-ID", strconv.Itoa(total)); code != 204 {
		t.Errorf("resume past the end on server 2: %d %s, want 204", code, body)
	}
}
