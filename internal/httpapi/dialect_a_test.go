package httpapi_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"buildlog/internal/httpapi"
	"buildlog/internal/live"
	"buildlog/internal/metrics"
	"buildlog/internal/sse"
	"buildlog/internal/testkit"
)

func TestReplayFraming(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	s.append(id, msgs(0, 10))
	s.want(s.finish(id, "ready"), 200)
	st := s.open("/v1/templates/builds/"+id+"/logs", adminKey)
	if st.code != 200 || st.resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("status %d content-type %q", st.code, st.resp.Header.Get("Content-Type"))
	}
	if st.resp.Header.Get("Cache-Control") != "no-cache" || st.resp.Header.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("stream headers %v", st.resp.Header)
	}
	evs := st.all(t, 5*time.Second)
	if len(evs) != 11 {
		t.Fatalf("%d events, want 10 entries and the terminal one", len(evs))
	}
	checkDense(t, evs, 0)
	for _, ev := range evs {
		if ev.Type != "log" {
			t.Fatalf("event type %q", ev.Type)
		}
	}
	if st.rd.Retry < 1000 {
		t.Fatalf("retry: %d", st.rd.Retry)
	}
}

// The stream's exact bytes: retry first, then id/event/data frames.
func TestReplayBytes(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(map[string]any{"build_id": "tb_bytes"})
	s.append(id, []map[string]any{{"message": "hi", "timestamp": "2026-03-17T00:00:12Z"}})
	r := s.want(s.do("GET", "/v1/templates/builds/"+id+"/logs", adminKey, nil), 200)
	body := string(r.body)
	if !strings.HasPrefix(body, "retry: ") {
		t.Fatalf("stream does not begin with retry: %q", body)
	}
	_, frames, _ := strings.Cut(body, "\n\n")
	want := "id: 0\nevent: log\ndata: {\"build_id\":\"tb_bytes\",\"template_id\":\"tmpl_1\",\"offset\":0,\"timestamp\":\"2026-03-17T00:00:12Z\",\"kind\":\"message\",\"level\":\"info\",\"message\":\"hi\"}\n\n"
	if frames != want {
		t.Fatalf("frames\n%q\nwant\n%q", frames, want)
	}
}

// A replay many store pages long arrives whole and in order, from the start
// and from the middle, and a reader that leaves part way leaves nothing
// running behind it (the next page is read while one is sent).
func TestLongReplay(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	big := strings.Repeat("r", 1000)
	const batches, per = 14, 500 // ~7 MB: several 1 MiB store reads
	for range batches {
		es := make([]map[string]any, per)
		for i := range es {
			es[i] = map[string]any{"message": big}
		}
		s.append(id, es)
	}
	total := batches * per
	for _, from := range []int{0, 1, 2499, total - 1} {
		st := s.open("/v1/templates/builds/"+id+"/logs?follow=false&offset="+strconv.Itoa(from), adminKey)
		evs := st.all(t, 60*time.Second)
		if len(evs) != total-from {
			t.Fatalf("replay from %d: %d events, want %d", from, len(evs), total-from)
		}
		checkDense(t, evs, uint64(from))
	}

	base := runtime.NumGoroutine()
	for range 30 {
		st := s.open("/v1/templates/builds/"+id+"/logs?follow=false", adminKey)
		for range 100 {
			if _, err := st.rd.Next(); err != nil {
				t.Fatal(err)
			}
		}
		st.close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+5 {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before, %d after 30 readers left part way", base, runtime.NumGoroutine())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStartOffsets(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	s.append(id, msgs(0, 4))
	s.append(id, msgs(4, 6))
	s.want(s.finish(id, "ready"), 200)
	p := "/v1/templates/builds/" + id + "/logs"
	cases := []struct {
		query, lastID string
		from          uint64
	}{
		{"?offset=4", "", 4},
		{"?offset=5", "", 5}, // the middle of a stored batch
		{"?cursor=6", "", 6},
		{"?offset=2&cursor=8", "", 2},
		{"", "7", 8},
		{"?offset=1", "7", 1},
		{"", "", 0},
	}
	for _, c := range cases {
		var hdr []string
		if c.lastID != "" {
			hdr = []string{"Last-Event-ID", c.lastID}
		}
		evs := s.open(p+c.query, adminKey, hdr...).all(t, 5*time.Second)
		if uint64(len(evs)) != 11-c.from {
			t.Fatalf("%s Last-Event-ID %q: %d events, want %d", c.query, c.lastID, len(evs), 11-c.from)
		}
		checkDense(t, evs, c.from)
	}
	// At or past the end of a finished build: 204, so EventSource stops.
	for _, q := range []string{"?offset=11", "?offset=500", "?cursor=11"} {
		s.want(s.do("GET", p+q, adminKey, nil), 204)
	}
	s.want(s.do("GET", p, adminKey, nil, "Last-Event-ID", "10"), 204)
	for _, q := range []string{"?offset=-1", "?offset=x", "?cursor=1.5", "?follow=maybe", "?offset=18446744073709551616"} {
		msg := s.want(s.do("GET", p+q, adminKey, nil), 400).errMessage(t)
		name, _, _ := strings.Cut(q[1:], "=")
		if !strings.Contains(msg, name) {
			t.Errorf("%s: message %q does not name %s", q, msg, name)
		}
	}
	s.want(s.do("GET", p, adminKey, nil, "Last-Event-ID", "abc"), 400)
	s.want(s.do("GET", p, adminKey, nil, "Last-Event-ID", "18446744073709551615"), 400)
}

func TestRunningBuildPastEnd(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	s.append(id, msgs(0, 3))
	p := "/v1/templates/builds/" + id + "/logs"
	if evs := s.open(p+"?offset=3", adminKey).all(t, 5*time.Second); len(evs) != 0 {
		t.Fatalf("follow=false past the end of a running build: %d events", len(evs))
	}
	if evs := s.open(p+"?offset=1", adminKey).all(t, 5*time.Second); len(evs) != 2 {
		t.Fatalf("follow=false: %d events, want the 2 stored", len(evs))
	}
	// Following from past the end waits for those entries...
	st := s.open(p+"?offset=5&follow=true", adminKey)
	go func() {
		time.Sleep(100 * time.Millisecond)
		s.append(id, msgs(3, 4))
		s.finish(id, "ready")
	}()
	evs := st.all(t, 10*time.Second)
	checkDense(t, evs, 5)
	if len(evs) != 3 {
		t.Fatalf("%d events, want offsets 5, 6 and the terminal 7", len(evs))
	}
	// ...and ends if the build finishes short of them.
	id2 := s.newBuild(nil)
	st = s.open("/v1/templates/builds/"+id2+"/logs?offset=50&follow=true", adminKey)
	go func() { time.Sleep(100 * time.Millisecond); s.finish(id2, "failed") }()
	if evs := st.all(t, 10*time.Second); len(evs) != 0 {
		t.Fatalf("%d events past the end", len(evs))
	}
}

func TestFollowLive(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	st := s.open("/v1/templates/builds/"+id+"/logs?follow=true", adminKey)
	if st.code != 200 {
		t.Fatalf("follow: %d", st.code)
	}
	go func() {
		for i := 0; i < 5; i++ {
			time.Sleep(20 * time.Millisecond)
			s.append(id, msgs(i*4, 4))
		}
		s.finish(id, "ready")
	}()
	evs := st.all(t, 10*time.Second)
	if len(evs) != 21 {
		t.Fatalf("%d events, want 21", len(evs))
	}
	checkDense(t, evs, 0)
}

func TestKeepalive(t *testing.T) {
	s := newServer(t, func(c *httpapi.Config) { c.Keepalive = 50 * time.Millisecond })
	id := s.newBuild(nil)
	st := s.open("/v1/templates/builds/"+id+"/logs?follow=true", adminKey)
	br := bufio.NewReader(st.resp.Body)
	n := 0
	deadline := time.AfterFunc(5*time.Second, st.stop)
	defer deadline.Stop()
	for n < 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d keepalives: %v", n, err)
		}
		if line == ": keepalive\n" {
			n++
		}
	}
}

// The hand-over invariant under stress: whenever and wherever a follower
// joins, and however often it reconnects, it sees exactly the dense
// sequence from its start to the terminal entry. A stalled follower that
// never reads holds up neither the producer nor the others.
func TestFollowersUnderStress(t *testing.T) {
	// No keepalives: a missed wake-up would otherwise be hidden by the
	// keepalive timer's next read; here it leaves a follower stuck.
	s := newServer(t, func(c *httpapi.Config) { c.Keepalive = time.Hour })
	id := s.newBuild(nil)
	p := "/v1/templates/builds/" + id + "/logs?follow=true"
	const total = 5000

	stalled := s.open(p, adminKey) // never read
	_ = stalled

	var mu sync.Mutex
	next := 0
	producerDone := make(chan struct{})
	go func() {
		defer close(producerDone)
		for next < total {
			n := min(1+rand.IntN(60), total-next)
			s.append(id, msgs(next, n))
			mu.Lock()
			next += n
			mu.Unlock()
		}
		s.finish(id, "ready")
	}()

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for f := 0; f < 20; f++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
			mu.Lock()
			start := uint64(rand.IntN(next + 1))
			mu.Unlock()
			errs <- follow(s, id, start, f)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	select {
	case <-producerDone:
	case <-time.After(90 * time.Second):
		t.Fatal("producer blocked")
	}
}

// follow reads a build from start to its terminal entry, as follower f:
// odd followers join by Last-Event-ID, every third reconnects mid-stream.
func follow(s *server, id string, start uint64, f int) error {
	pos := start
	for attempt := 0; attempt < 50; attempt++ {
		done, err := followOnce(s, id, start, &pos, f)
		if done || err != nil {
			return err
		}
	}
	return fmt.Errorf("follower %d: too many reconnects", f)
}

// followOnce reads one connection's worth, advancing *pos; done is true
// once the terminal entry was read.
func followOnce(s *server, id string, start uint64, pos *uint64, f int) (done bool, err error) {
	// Generous: a missed wake-up hangs forever, so any bound catches it;
	// under -race on two cores shared with other test processes the whole
	// 5,000-entry run has taken over 20 s.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/v1/templates/builds/"+id+"/logs?follow=true", nil)
	req.Header.Set("Authorization", "Bearer "+adminKey)
	if f%2 == 1 && *pos > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(*pos-1, 10))
	} else {
		req.URL.RawQuery += "&offset=" + strconv.FormatUint(*pos, 10)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		return false, fmt.Errorf("follower %d: status %d at %d", f, res.StatusCode, *pos)
	}
	rd := sse.NewReader(res.Body)
	dropAfter := -1
	if f%3 == 0 {
		dropAfter = 1 + rand.IntN(400)
	}
	for n := 0; n != dropAfter; n++ {
		ev, err := rd.Next()
		if err != nil {
			return false, fmt.Errorf("follower %d from %d: stream ended at %d: %v", f, start, *pos, err)
		}
		kind, err := testkit.FollowedEntry(ev, *pos)
		if err != nil {
			return false, fmt.Errorf("follower %d from %d: %w", f, start, err)
		}
		if kind == "end" {
			if *pos != 5000 {
				return false, fmt.Errorf("follower %d: terminal entry at %d", f, *pos)
			}
			return true, nil
		}
		*pos++
	}
	return false, nil // hung up mid-stream on purpose; reconnect
}

// Followers that come and go leave nothing behind: no goroutines, no
// registration on the hub, no open stream in the counters (which also
// hold the per-key and per-server limits).
func TestFollowersDoNotLeak(t *testing.T) {
	hub, m := live.New(0), metrics.New()
	s := newServer(t, func(c *httpapi.Config) { c.Hub, c.Metrics = hub, m })
	id := s.versionBuild("tb_leak", "leak", "1.0.0")
	s.append(id, msgs(0, 1))
	base := runtime.NumGoroutine()
	tr := &http.Transport{MaxIdleConnsPerHost: -1}
	client := &http.Client{Transport: tr}
	for i := 0; i < 500; i++ {
		p := "/v1/templates/builds/" + id + "/logs?follow=true" // dialect A
		if i%5 == 0 {
			p = eventsPath("leak", "1.0.0") // dialect B
		}
		req, _ := http.NewRequest("GET", s.URL+p, nil)
		req.Header.Set("Authorization", "Bearer "+adminKey)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		rd := sse.NewReader(res.Body)
		if _, err := rd.Next(); err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	tr.CloseIdleConnections()
	// open lists the open-stream gauges that are not zero.
	open := func() string {
		var out []string
		gauges := 0
		for _, l := range strings.Split(string(s.want(s.do("GET", "/metrics", "", nil), 200).body), "\n") {
			if strings.HasPrefix(l, "buildlog_open_streams{") {
				gauges++
				if !strings.HasSuffix(l, " 0") {
					out = append(out, l)
				}
			}
		}
		if gauges != 2 {
			t.Fatalf("%d open-stream gauges in /metrics, want 2 (dialects a and b)", gauges)
		}
		return strings.Join(out, ", ")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		goroutines, followed, streams := runtime.NumGoroutine(), hub.Followed(), open()
		if goroutines <= base+5 && followed == 0 && streams == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after 500 followers left: %d goroutines (%d before), %d followed builds on the hub, open streams %q",
				goroutines, base, followed, streams)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStreamLimitPerKey(t *testing.T) {
	s := newServer(t, func(c *httpapi.Config) { c.MaxStreamsPerKey = 2 })
	id := s.newBuild(nil)
	p := "/v1/templates/builds/" + id + "/logs?follow=true"
	a, b := s.open(p, adminKey), s.open(p, adminKey)
	if a.code != 200 || b.code != 200 {
		t.Fatal(a.code, b.code)
	}
	r := s.want(s.do("GET", p, adminKey, nil), 429)
	if r.header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	a.close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := s.open(p, adminKey)
		if st.code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("closing a stream did not free its slot")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Drain ends open streams cleanly so clients reconnect.
func TestDrainEndsStreams(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	s.append(id, msgs(0, 2))
	st := s.open("/v1/templates/builds/"+id+"/logs?follow=true", adminKey)
	go func() { time.Sleep(100 * time.Millisecond); s.api.Drain() }()
	evs := st.all(t, 5*time.Second)
	checkDense(t, evs, 0)
	if len(evs) != 2 {
		t.Fatalf("%d events before the drain", len(evs))
	}
}

// Followers that stop reading their sockets, with far more log than socket
// buffers hold, leave the producer and a healthy follower unaffected.
func TestStalledFollowersDoNotBlock(t *testing.T) {
	s := newServer(t, func(c *httpapi.Config) { c.Keepalive = time.Hour })
	id := s.newBuild(nil)
	p := "/v1/templates/builds/" + id + "/logs?follow=true"
	for i := 0; i < 5; i++ {
		s.open(p, adminKey) // never read
	}
	healthy := s.open(p, adminKey)
	got := make(chan []sse.Event, 1)
	go func() { got <- healthy.all(t, 60*time.Second) }()

	big := strings.Repeat("x", 1000)
	const batches, per = 40, 500 // 20 MB, several times what socket buffers hold
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := 0; b < batches; b++ {
			es := make([]map[string]any, per)
			for i := range es {
				es[i] = map[string]any{"message": big}
			}
			s.append(id, es)
		}
		s.finish(id, "ready")
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("producer blocked behind stalled followers")
	}
	evs := <-got
	if len(evs) != batches*per+1 {
		t.Fatalf("healthy follower got %d events, want %d", len(evs), batches*per+1)
	}
	for i, ev := range evs {
		if ev.ID != strconv.Itoa(i) {
			t.Fatalf("event %d has id %s", i, ev.ID)
		}
	}
}
