package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"buildlog/internal/sse"
	"buildlog/internal/testkit"
)

// SIGTERM: the server stops accepting, lets an append already in flight
// finish (and stores it), ends open streams cleanly so clients resume with
// Last-Event-ID, and exits within --shutdown-timeout even when a client
// never finishes its request.
func TestDrainFinishesInFlight(t *testing.T) {
	data := t.TempDir()
	addr := testkit.FreeAddr(t)
	env := []string{"BUILDLOG_ADMIN_KEY=k"}
	p := startServe(t, addr, env, "--addr", addr, "--data", data, "--shutdown-timeout", "3s")
	p.do("POST", "/v1/templates/t/builds", "k", `{"build_id":"tb_drain"}`)
	p.do("POST", "/v1/templates/builds/tb_drain/logs", "k", `[{"message":"a"},{"message":"b"}]`)

	// A follower, reading.
	res := p.follow("tb_drain", "k")
	defer res.Body.Close()
	type result struct {
		ids []string
		err error
	}
	streamDone := make(chan result, 1)
	go func() {
		rd := sse.NewReader(res.Body)
		var r result
		for {
			ev, err := rd.Next()
			if err != nil {
				if err != io.EOF {
					r.err = err
				}
				streamDone <- r
				return
			}
			r.ids = append(r.ids, ev.ID)
		}
	}()

	// An append whose body is still arriving when SIGTERM comes.
	inflight := rawConn(t, addr)
	body := `[{"message":"in flight 1"},{"message":"in flight 2"}]`
	fmt.Fprintf(inflight, "POST /v1/templates/builds/tb_drain/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:10])
	// A client that never finishes its request holds Shutdown to its bound.
	hung := rawConn(t, addr)
	fmt.Fprintf(hung, "POST /v1/templates/builds/tb_drain/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"+
		"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n[")
	time.Sleep(200 * time.Millisecond)

	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case r := <-streamDone:
		if r.err != nil || strings.Join(r.ids, ",") != "0,1" {
			t.Fatalf("stream at SIGTERM: ids %v, err %v; want 0,1 and a clean end", r.ids, r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("stream still open 15s after SIGTERM")
	}
	// No new connections once draining.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections 10s after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The in-flight append completes and is acknowledged.
	io.WriteString(inflight, body[10:])
	inflight.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, err := http.ReadResponse(bufio.NewReader(inflight), nil)
	if err != nil {
		t.Fatalf("in-flight append after SIGTERM: %v", err)
	}
	b, _ := io.ReadAll(reply.Body)
	if reply.StatusCode != 200 || !strings.Contains(string(b), `"first_offset":2`) {
		t.Fatalf("in-flight append: %d %s", reply.StatusCode, b)
	}
	<-p.done
	took := time.Since(start)
	if p.waited != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", p.waited, p.out)
	}
	if took > 3*time.Second+12*time.Second { // loose: a loaded machine, not the server, sets the rest
		t.Fatalf("exited %v after SIGTERM with --shutdown-timeout 3s", took)
	}
	t.Logf("exited %v after SIGTERM (--shutdown-timeout 3s, one client hung)", took)

	// After a restart the client resumes where its stream ended.
	p = startServe(t, addr, env, "--addr", addr, "--data", data)
	p.do("POST", "/v1/templates/builds/tb_drain/finish", "k", `{"status":"ready"}`)
	res2 := p.follow("tb_drain", "k", "Last-Event-ID", "1")
	defer res2.Body.Close()
	var ids []string
	rd := sse.NewReader(res2.Body)
	for {
		ev, err := rd.Next()
		if err != nil {
			break
		}
		ids = append(ids, ev.ID)
	}
	if strings.Join(ids, ",") != "2,3,4" {
		t.Fatalf("resume after restart: ids %v, want 2,3,4 (the in-flight pair and the end)", ids)
	}
}

func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// cutWithin trickles write every interval until the server closes the
// connection; it returns how long that took, or fails after limit.
func cutWithin(t *testing.T, c net.Conn, head string, trickle string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c) // returns when the server closes
		close(closed)
	}()
	io.WriteString(c, head)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-closed:
			return time.Since(start)
		case <-tick.C:
			if time.Since(start) > limit {
				t.Fatalf("a trickling client still connected after %v", limit)
			}
			io.WriteString(c, trickle)
		}
	}
}

// Slowloris: a client that trickles its headers, or its body, is cut off
// at --read-header-timeout, or --read-timeout, while others are served.
func TestSlowClientsCutOff(t *testing.T) {
	addr := testkit.FreeAddr(t)
	p := startServe(t, addr, []string{"BUILDLOG_ADMIN_KEY=k"}, "--addr", addr, "--data", t.TempDir(),
		"--read-header-timeout", "1s", "--read-timeout", "2s")
	p.do("POST", "/v1/templates/t/builds", "k", `{"build_id":"tb_slow"}`)

	var conns []net.Conn
	for range 20 {
		conns = append(conns, rawConn(t, addr))
	}
	headersDone := make(chan time.Duration, len(conns))
	for _, c := range conns {
		go func() {
			headersDone <- cutWithin(t, c, "GET /healthz HTTP/1.1\r\nHost: x\r\n", "X-Trickle: 1\r\n", 10*time.Second)
		}()
	}
	// Meanwhile the server answers everyone else.
	if code, _ := p.do("GET", "/v1/templates/builds/tb_slow", "k", ""); code != 200 {
		t.Fatalf("server busy with slow clients: %d", code)
	}
	var slowest time.Duration
	for range conns {
		slowest = max(slowest, <-headersDone)
	}
	if slowest < 900*time.Millisecond {
		t.Fatalf("trickling headers cut after %v, before --read-header-timeout 1s", slowest)
	}

	body := rawConn(t, addr)
	took := cutWithin(t, body, "POST /v1/templates/builds/tb_slow/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"+
		"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n[", `{"message":"x"},`, 10*time.Second)
	if took < 1900*time.Millisecond {
		t.Fatalf("trickling body cut after %v, before --read-timeout 2s", took)
	}
	t.Logf("trickled headers cut after %v (limit 1s), trickled body after %v (limit 2s)", slowest, took)
	if code, body := p.do("GET", "/v1/templates/builds/tb_slow", "k", ""); code != 200 || !strings.Contains(string(body), `"next_offset":0`) {
		t.Fatalf("after the slow clients: %d %s", code, body)
	}
}

// No key or token ever reaches the server's log, whatever a client does
// with it, at the most verbose level.
func TestKeysNeverLogged(t *testing.T) {
	const admin = "adm-7Hq2ZkP9sVtX4mWb"
	addr := testkit.FreeAddr(t)
	p := startServe(t, addr, []string{"BUILDLOG_ADMIN_KEY=" + admin}, "--addr", addr, "--data", t.TempDir(), "--log-level", "debug")
	_, kb := p.do("POST", "/v1/keys", admin, `{"team":"acme","scopes":["read","write"],"name":"ci"}`)
	key := mustJSON(t, kb)["key"].(string)
	id := mustJSON(t, kb)["id"].(string)
	p.do("POST", "/v1/templates/t/builds", key, `{"build_id":"tb_log"}`)
	p.do("POST", "/v1/templates/builds/tb_log/logs", key, `[{"message":"hello"}]`)
	_, tb := p.do("POST", "/v1/templates/builds/tb_log/stream-token", key, "")
	tok := mustJSON(t, tb)["token"].(string)

	secrets := []string{admin, key, tok}
	for _, s := range secrets {
		p.do("GET", "/v1/templates/builds/tb_log/logs?token="+s, "", "")
		p.do("GET", "/v1/builds/tb_log/logs?token="+s+"&limit=0", "", "")
		p.do("GET", "/v1/templates/builds/tb_log", s+"x", "")                  // a near miss: 401
		p.do("GET", "/v1/templates/builds/tb_log", "", "", "Authorization", s) // no scheme
		p.do("GET", "/v1/templates/builds/tb_log", "", "", "Authorization", "Basic "+s)
		p.do("POST", "/v1/templates/builds/tb_log/logs", s, `[{"message":1}]`) // bad input
		p.do("GET", "/v1/templates/builds/tb_log/logs?offset=x&token="+s, s, "")
		p.do("GET", "/v1/nowhere/"+strings.Repeat("a", 10), s, "")
	}
	// A stream opened and dropped, a revoked key used again.
	req, _ := http.NewRequest("GET", p.URL+"/v1/templates/builds/tb_log/logs?follow=true", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
	}
	p.do("DELETE", "/v1/keys/"+id, admin, "")
	p.do("GET", "/v1/templates/builds/tb_log", key, "")
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done

	out := p.out.String()
	if n := strings.Count(out, `"msg":"request"`); n < 30 {
		t.Fatalf("only %d request log lines; is the log being captured?\n%s", n, out)
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Fatalf("the server log holds a key or token (%.8s…):\n%s", s, out)
		}
	}
	// Nor a fragment long enough to matter.
	for _, s := range secrets {
		for i := 0; i+12 <= len(s); i += 4 {
			if strings.Contains(out, s[i:i+12]) {
				t.Fatalf("the server log holds part of a key or token: %q", s[i:i+12])
			}
		}
	}
}

// Limit flags reach the server: a key's request rate and the server's
// stream count answer 429 with Retry-After; /metrics shows them.
func TestLimitFlags(t *testing.T) {
	addr := testkit.FreeAddr(t)
	p := startServe(t, addr, []string{"BUILDLOG_ADMIN_KEY=k", "BUILDLOG_MAX_STREAMS=1"}, "--addr", addr, "--data", t.TempDir(),
		"--rate-per-key", "5", "--rate-burst", "20")
	p.do("POST", "/v1/templates/t/builds", "k", `{"build_id":"tb_lim"}`)
	req, _ := http.NewRequest("GET", p.URL+"/v1/templates/builds/tb_lim/logs?follow=true", nil)
	req.Header.Set("Authorization", "Bearer k")
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("first stream: %v %v", res, err)
	}
	defer res.Body.Close()
	r2, err := http.DefaultClient.Do(req.Clone(req.Context()))
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != 429 || r2.Header.Get("Retry-After") == "" {
		t.Fatalf("second stream with --max-streams 1: %d, Retry-After %q", r2.StatusCode, r2.Header.Get("Retry-After"))
	}
	// A team's key is limited (the operator's BUILDLOG_ADMIN_KEY is not).
	_, kb := p.do("POST", "/v1/keys", "k", `{"team":"default","scopes":["read"]}`)
	key := mustJSON(t, kb)["key"].(string)
	limited := 0
	var retry string
	for range 40 {
		rq, _ := http.NewRequest("GET", p.URL+"/v1/templates/builds/tb_lim", nil)
		rq.Header.Set("Authorization", "Bearer "+key)
		r, err := http.DefaultClient.Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode == 429 {
			limited++
			retry = r.Header.Get("Retry-After")
		}
	}
	if limited == 0 || retry == "" {
		t.Fatalf("40 quick requests at --rate-per-key 5 --rate-burst 20: %d refused, Retry-After %q", limited, retry)
	}
	code, body := p.do("GET", "/metrics", "", "")
	for _, want := range []string{`buildlog_rate_limited_total{limit="rate_per_key"}`, `buildlog_rate_limited_total{limit="streams_per_server"} 1`, `buildlog_open_streams{dialect="a"} 1`} {
		if code != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("/metrics lacks %s: %d", want, code)
		}
	}
}

// --retention deletes finished builds, metadata and log, once they are
// that old; unfinished builds stay. Reading a deleted build is 404.
func TestRetention(t *testing.T) {
	addr := testkit.FreeAddr(t)
	p := startServe(t, addr, []string{"BUILDLOG_ADMIN_KEY=k"}, "--addr", addr, "--data", t.TempDir(), "--retention", "1s")
	for _, id := range []string{"tb_old", "tb_running"} {
		p.do("POST", "/v1/templates/t/builds", "k", `{"build_id":"`+id+`"}`)
		p.do("POST", "/v1/templates/builds/"+id+"/logs", "k", `[{"message":"x"}]`)
	}
	p.do("POST", "/v1/templates/builds/tb_old/finish", "k", `{"status":"ready"}`)
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, _ := p.do("GET", "/v1/templates/builds/tb_old", "k", "")
		if code == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("finished build still there 15s past --retention 1s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, path := range []string{"/v1/templates/builds/tb_old/logs", "/v1/builds/tb_old/logs", "/v1/builds/tb_old"} {
		if code, _ := p.do("GET", path, "k", ""); code != 404 {
			t.Fatalf("%s of a deleted build: %d", path, code)
		}
	}
	if code, _ := p.do("GET", "/v1/templates/builds/tb_running", "k", ""); code != 200 {
		t.Fatalf("running build deleted: %d", code)
	}
	if d, err := parseDuration("30d"); err != nil || d != 30*24*time.Hour {
		t.Fatalf("30d: %v %v", d, err)
	}
}
