package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"buildlog"
	"buildlog/client"
	"buildlog/internal/testkit"
)

// checkMessages fails unless the stored log is exactly want, in order.
func checkMessages(t *testing.T, got []buildlog.Entry, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("stored %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Message != want[i] || got[i].Offset != uint64(i) {
			t.Fatalf("entry %d is %d %q, want %q", i, got[i].Offset, got[i].Message, want[i])
		}
	}
}

func TestWriterRidesOutAnOutage(t *testing.T) {
	s := startServer(t, t.TempDir(), "", nil)
	p := testkit.NewProxy(t, s.addr)
	newBuild(t, s.client(), "tb_out")
	c := proxyClient(p, 5*time.Millisecond, 50*time.Millisecond)
	var retries atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w, err := c.NewWriter(ctx, "tb_out", client.WriterOptions{FlushInterval: 5 * time.Millisecond, MaxBatch: 7,
		OnRetry: func(error, time.Duration) { retries.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 600 {
		switch i {
		case 100, 400:
			p.Refuse(true)
		case 250, 500:
			// Stay down until an append has failed, however slow the machine.
			for deadline := time.Now().Add(20 * time.Second); retries.Load() == 0 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			p.Refuse(false)
		}
		if i%50 == 0 {
			p.Cut() // also break connections mid-request
		}
		m := fmt.Sprintf("line %d", i)
		want = append(want, m)
		if err := w.Add(ctx, buildlog.Entry{Message: m}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Microsecond)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	checkMessages(t, logOf(t, s.store, "tb_out"), want)
	if retries.Load() == 0 {
		t.Fatal("no append failed; the outage tested nothing")
	}
}

func TestWriterLostRepliesAreNotDuplicated(t *testing.T) {
	isAppend := func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/logs") && r.Method == "POST" }
	s := startServer(t, t.TempDir(), "", abortAfterHandling(5, isAppend))
	c := s.client()
	newBuild(t, c, "tb_lw")
	ctx := context.Background()
	w, err := c.NewWriter(ctx, "tb_lw", client.WriterOptions{MaxBatch: 3, FlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 40 {
		m := fmt.Sprintf("l%d", i)
		want = append(want, m)
		if err := w.Add(ctx, buildlog.Entry{Message: m}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	checkMessages(t, logOf(t, s.store, "tb_lw"), want)
}

func TestWriterMemoryIsBounded(t *testing.T) {
	s := startServer(t, t.TempDir(), "", nil)
	p := testkit.NewProxy(t, s.addr)
	newBuild(t, s.client(), "tb_full")
	c := proxyClient(p, 5*time.Millisecond, 20*time.Millisecond)
	w, err := c.NewWriter(context.Background(), "tb_full", client.WriterOptions{MaxBuffered: 20})
	if err != nil {
		t.Fatal(err)
	}
	p.Refuse(true)
	for i := range 20 {
		if err := w.Add(context.Background(), buildlog.Entry{Message: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// The 21st waits for room, and gives up with its context.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := w.Add(ctx, buildlog.Entry{Message: "20"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Add on a full buffer: %v", err)
	}
	// Close gives up too, saying how much is left.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if err := w.Close(ctx2); err == nil || !strings.Contains(err.Error(), "20 log entries not delivered") {
		t.Fatalf("Close while unreachable: %v", err)
	}
}

func TestWriterAddLinesSplitsLongLines(t *testing.T) {
	s := startServer(t, t.TempDir(), "", nil)
	c := s.client()
	newBuild(t, c, "tb_lines")
	ctx := context.Background()
	w, err := c.NewWriter(ctx, "tb_lines", client.WriterOptions{MaxMessage: 10})
	if err != nil {
		t.Fatal(err)
	}
	src := "stdout"
	in := "short\r\n" + strings.Repeat("é", 8) + "\n\nlast without newline"
	if err := w.AddLines(ctx, strings.NewReader(in), buildlog.Entry{Source: &src, Level: buildlog.LevelWarn}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	got := logOf(t, s.store, "tb_lines")
	// "é" is two bytes: 10-byte pieces hold five, never half of one.
	checkMessages(t, got, []string{"short", "ééééé", "ééé", "", "last witho", "ut newline"})
	if *got[0].Source != "stdout" || got[0].Level != buildlog.LevelWarn {
		t.Fatalf("template not applied: %+v", got[0])
	}
}

func TestWriterStopsOnRefusal(t *testing.T) {
	s := startServer(t, t.TempDir(), "", nil)
	c := s.client()
	newBuild(t, c, "tb_ref")
	ctx := context.Background()
	w, err := c.NewWriter(ctx, "tb_ref", client.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(ctx, buildlog.Entry{Message: "x", Phase: "Not A Phase"}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(ctx); !isErr(err, buildlog.EInvalid) {
		t.Fatalf("Close after an invalid entry: %v", err)
	}
}

func TestSplitMessage(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want []string
	}{
		{"", 10, []string{""}},
		{"abcd", 4, []string{"abcd"}},
		{"abcde", 4, []string{"abcd", "e"}},
		{"a€b", 4, []string{"a€", "b"}},
		{"€€", 4, []string{"€", "€"}},
		{"a\xffb", 10, []string{"a\uFFFDb"}},
	} {
		if got := client.SplitMessage(tc.in, tc.max); fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
			t.Errorf("SplitMessage(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}
