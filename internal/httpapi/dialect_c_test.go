package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cPage is a dialect C logs page, with whether nextToken was present.
type cPage struct {
	Logs      []string
	NextToken string
	hasToken  bool
}

func (s *server) poll(id, query string) cPage {
	s.t.Helper()
	r := s.want(s.do("GET", "/v1/builds/"+id+"/logs"+query, adminKey, nil), 200)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &raw); err != nil {
		s.t.Fatalf("not a JSON object: %s", r.body)
	}
	var p cPage
	if err := json.Unmarshal(raw["logs"], &p.Logs); err != nil || p.Logs == nil {
		s.t.Fatalf("logs is not an array of strings: %s", r.body)
	}
	if tok, ok := raw["nextToken"]; ok {
		p.hasToken = true
		if err := json.Unmarshal(tok, &p.NextToken); err != nil || p.NextToken == "" {
			s.t.Fatalf("nextToken is not a non-empty string: %s", r.body)
		}
	}
	for k := range raw {
		if k != "logs" && k != "nextToken" {
			s.t.Fatalf("page has field %q: %s", k, r.body)
		}
	}
	return p
}

// withToken is a query continuing from p.
func (p cPage) withToken(limit int) string {
	return fmt.Sprintf("?limit=%d&nextToken=%s", limit, url.QueryEscape(p.NextToken))
}

// lineN is how dialect C shows msgs' entry n appended without timestamp
// or source: only the message part is compared.
func lineMsg(t *testing.T, line string) string {
	t.Helper()
	// "[builder] 2006/01/02 15:04:05 message"
	if len(line) < len("[builder] 2006/01/02 15:04:05 ") || !strings.HasPrefix(line, "[builder] ") {
		t.Fatalf("line %q is not [builder] <time> <message>", line)
	}
	if _, err := time.Parse("2006/01/02 15:04:05", line[10:29]); err != nil {
		t.Fatalf("line %q: time: %v", line, err)
	}
	return line[30:]
}

func TestCLimit(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	s.append(id, msgs(0, 700))
	p := "/v1/builds/" + id + "/logs"

	if got := s.poll(id, ""); len(got.Logs) != 500 || lineMsg(t, got.Logs[0]) != "line 200" || lineMsg(t, got.Logs[499]) != "line 699" {
		t.Fatalf("default page: %d lines", len(got.Logs))
	}
	for _, n := range []int{1, 7, 699, 700, 10000} {
		got := s.poll(id, "?limit="+strconv.Itoa(n))
		if want := min(n, 700); len(got.Logs) != want || lineMsg(t, got.Logs[want-1]) != "line 699" {
			t.Fatalf("limit=%d: %d lines", n, len(got.Logs))
		}
	}
	for _, bad := range []string{"0", "10001", "-1", "abc", "1.5", "", "1e3", "99999999999999999999"} {
		msg := s.want(s.do("GET", p+"?limit="+url.QueryEscape(bad), adminKey, nil), 400).errMessage(t)
		if !strings.Contains(msg, "limit") || !strings.Contains(msg, "range 1 to 10000") {
			t.Errorf("limit=%q: message %q does not name the range", bad, msg)
		}
	}
	for _, bad := range []string{"maybe", "yes", ""} {
		msg := s.want(s.do("GET", p+"?startFromHead="+bad, adminKey, nil), 400).errMessage(t)
		if !strings.Contains(msg, "startFromHead") {
			t.Errorf("startFromHead=%q: %q", bad, msg)
		}
	}
	if s.nextOffset(id) != 700 {
		t.Fatal("a bad request changed the build")
	}
	s.want(s.do("GET", "/v1/builds/nope/logs", adminKey, nil), 404)
	s.want(s.do("GET", p, "", nil), 401)
	acme, _ := s.newKey("acme", "read")
	s.want(s.do("GET", p, acme, nil), 404)
}

// Lines are "[<source, or builder>] <UTC time> <message>", whatever zone
// and precision the producer's timestamp had.
func TestCLineFormat(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	s.append(id, []map[string]any{
		{"message": "Entering phase: INSTALL", "source": "Container", "timestamp": "2026-03-04T10:00:00Z"},
		{"message": "no source", "timestamp": "2026-03-04T12:30:01.999+02:30"},
		{"message": "empty source", "source": "", "timestamp": "2026-03-04T23:59:59-01:00"},
		{"message": "", "source": "pip", "timestamp": "2026-12-31T23:59:59.5Z"},
		{"message": "  spaced  [x] ", "level": "error", "phase": "boot", "timestamp": "2026-03-04T10:00:05Z"},
		{"message": "\"q\" \\ <b>&amp; é \u2028 \x01 two\nlines", "source": "a\"b", "timestamp": "2026-03-04T10:00:06Z"},
	})
	got := s.poll(id, "")
	want := []string{
		"[Container] 2026/03/04 10:00:00 Entering phase: INSTALL",
		"[builder] 2026/03/04 10:00:01 no source",
		"[builder] 2026/03/05 00:59:59 empty source",
		"[pip] 2026/12/31 23:59:59 ",
		"[builder] 2026/03/04 10:00:05   spaced  [x] ",
		"[a\"b] 2026/03/04 10:00:06 \"q\" \\ <b>&amp; é \u2028 \x01 two\nlines",
	}
	if strings.Join(got.Logs, "\n") != strings.Join(want, "\n") {
		t.Fatalf("lines\n%q\nwant\n%q", got.Logs, want)
	}
	// The terminal entry is a line like any other, timed by the server's
	// clock in UTC.
	before := time.Now().UTC().Truncate(time.Second)
	s.want(s.do("POST", "/v1/templates/builds/"+id+"/finish", adminKey, map[string]any{"status": "ready", "message": "all done"}), 200)
	got = s.poll(id, "?limit=1")
	if len(got.Logs) != 1 || !strings.HasSuffix(got.Logs[0], " all done") || !strings.HasPrefix(got.Logs[0], "[builder] ") {
		t.Fatalf("terminal line %q", got.Logs)
	}
	ts, err := time.Parse("2006/01/02 15:04:05", got.Logs[0][10:29])
	if err != nil || ts.Before(before) || ts.After(time.Now().UTC().Add(time.Second)) {
		t.Fatalf("terminal line time %q is not the server's UTC clock (%v)", got.Logs[0], err)
	}
}

// Without a token: the most recent lines, oldest first. startFromHead
// gives the oldest instead. An empty build has no lines, and a token.
func TestCTailWithoutToken(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	if got := s.poll(id, ""); len(got.Logs) != 0 || !got.hasToken {
		t.Fatalf("queued build: %+v", got)
	}
	s.append(id, msgs(0, 10))
	check := func(query string, first, n int) cPage {
		t.Helper()
		got := s.poll(id, query)
		if len(got.Logs) != n {
			t.Fatalf("%s: %d lines, want %d", query, len(got.Logs), n)
		}
		for i, l := range got.Logs {
			if m := lineMsg(t, l); m != "line "+strconv.Itoa(first+i) {
				t.Fatalf("%s: line %d is %q, want line %d", query, i, m, first+i)
			}
		}
		return got
	}
	check("?limit=3", 7, 3)
	check("?limit=3&startFromHead=true", 0, 3)
	check("?limit=3&startFromHead=false", 7, 3)
	check("?limit=100", 0, 10)
	// An empty nextToken is no token, so a shell loop can start with one.
	check("?limit=4&nextToken=", 6, 4)
}

// nextToken: present while more lines exist or the build is unfinished,
// absent once a finished build's last line has been returned; following
// it reads every later line exactly once.
func TestCNextToken(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	s.append(id, msgs(0, 5))

	p := s.poll(id, "?limit=2")
	if !p.hasToken {
		t.Fatal("no token on a running build's tail page")
	}
	// At the end of a running build: no lines, a token that still works.
	if q := s.poll(id, p.withToken(2)); len(q.Logs) != 0 || !q.hasToken {
		t.Fatalf("at the end of a running build: %+v", q)
	}
	s.append(id, msgs(5, 3))
	q := s.poll(id, p.withToken(2))
	if len(q.Logs) != 2 || lineMsg(t, q.Logs[0]) != "line 5" || lineMsg(t, q.Logs[1]) != "line 6" || !q.hasToken {
		t.Fatalf("after the token: %+v", q)
	}
	// The same token gives the same page: tokens name a position.
	if again := s.poll(id, p.withToken(2)); strings.Join(again.Logs, "|") != strings.Join(q.Logs, "|") {
		t.Fatalf("replayed token: %q then %q", q.Logs, again.Logs)
	}
	s.want(s.finish(id, "failed"), 200)
	r := s.poll(id, q.withToken(10))
	if len(r.Logs) != 2 || lineMsg(t, r.Logs[0]) != "line 7" || r.hasToken {
		t.Fatalf("last page of a finished build: %+v", r)
	}
	// Finished: more lines after the page keep the token; the page that
	// reaches the end drops it.
	head := s.poll(id, "?limit=4&startFromHead=true")
	if !head.hasToken {
		t.Fatal("no token though lines remain")
	}
	var all []string
	all = append(all, head.Logs...)
	for page := head; page.hasToken; {
		page = s.poll(id, page.withToken(4))
		all = append(all, page.Logs...)
		if len(all) > 100 {
			t.Fatal("token loop does not end")
		}
	}
	if len(all) != 9 {
		t.Fatalf("head-first token loop read %d lines, want 9", len(all))
	}
	for i := range 8 {
		if lineMsg(t, all[i]) != "line "+strconv.Itoa(i) {
			t.Fatalf("line %d: %q", i, all[i])
		}
	}
	// The tail of a finished build, whole: no token.
	if t9 := s.poll(id, ""); len(t9.Logs) != 9 || t9.hasToken {
		t.Fatalf("whole finished log: %d lines, token %v", len(t9.Logs), t9.hasToken)
	}
	if t3 := s.poll(id, "?limit=3"); len(t3.Logs) != 3 || t3.hasToken {
		t.Fatalf("tail of a finished build: %d lines, token %v", len(t3.Logs), t3.hasToken)
	}
}

// The loop "poll with nextToken until it is absent", run while a producer
// appends in many small batches, reads every line once, in order.
func TestCTokenLoopWhileWriting(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	const batches, per = 40, 7
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range batches {
			s.append(id, msgs(i*per, per))
			time.Sleep(2 * time.Millisecond)
		}
		s.finish(id, "ready")
	}()
	var all []string
	page := s.poll(id, "?limit=5&startFromHead=true")
	all = append(all, page.Logs...)
	deadline := time.Now().Add(60 * time.Second)
	for page.hasToken {
		if time.Now().After(deadline) {
			t.Fatalf("loop did not end; %d lines read", len(all))
		}
		if len(page.Logs) == 0 {
			time.Sleep(time.Millisecond)
		}
		page = s.poll(id, page.withToken(5))
		all = append(all, page.Logs...)
	}
	<-done
	if len(all) != batches*per+1 {
		t.Fatalf("%d lines, want %d", len(all), batches*per+1)
	}
	for i := range batches * per {
		if lineMsg(t, all[i]) != "line "+strconv.Itoa(i) {
			t.Fatalf("line %d: %q", i, all[i])
		}
	}
}

// Tokens are opaque and bound to their build: malformed, forged and other
// builds' tokens are all 400 naming nextToken, and change nothing.
func TestCBadTokens(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(map[string]any{"build_id": "tb_c1"})
	other := s.newBuild(map[string]any{"build_id": "tb_c2"})
	s.append(id, msgs(0, 5))
	s.append(other, msgs(0, 5))
	good := s.poll(id, "?limit=2&startFromHead=true")
	otherTok := s.poll(other, "?limit=2&startFromHead=true")
	if !good.hasToken || !otherTok.hasToken {
		t.Fatal("no tokens")
	}
	if _, err := strconv.Atoi(good.NextToken); err == nil || strings.Contains(good.NextToken, "tb_c1") {
		t.Fatalf("token is not opaque: %q", good.NextToken)
	}
	flip := func(tok string, i int) string {
		b := []byte(tok)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	bad := []string{
		"x", "!!!", "eyJuZXh0VG9rZW4iOiAiYWJjMTIzIn0=", // the seed's example
		good.NextToken + "A", good.NextToken[:len(good.NextToken)-1],
		flip(good.NextToken, 0),                     // offset forged
		flip(good.NextToken, 10),                    // still the offset bytes
		flip(good.NextToken, len(good.NextToken)-1), // MAC forged
		otherTok.NextToken,                          // another build's
		strings.Repeat("A", 32),                     // all-zero offset, no MAC
	}
	for _, tok := range bad {
		r := s.do("GET", "/v1/builds/"+id+"/logs?nextToken="+url.QueryEscape(tok), adminKey, nil)
		if r.code != 400 {
			t.Errorf("token %q: %s", tok, r)
			continue
		}
		if msg := r.errMessage(t); !strings.Contains(msg, "nextToken") {
			t.Errorf("token %q: message %q does not name nextToken", tok, msg)
		}
	}
	if s.nextOffset(id) != 5 || s.nextOffset(other) != 5 {
		t.Fatal("a bad token changed a build")
	}
	// The good token still works after all that.
	if p := s.poll(id, good.withToken(10)); len(p.Logs) != 3 || lineMsg(t, p.Logs[0]) != "line 2" {
		t.Fatalf("good token after bad ones: %+v", p)
	}
}

// GET /v1/builds/{buildId}: the seed's status words and camelCase times.
func TestCBuildStatus(t *testing.T) {
	s := newServer(t)
	cases := []struct{ finish, want string }{
		{"", "pending"}, {"-", "building"}, {"ready", "success"}, {"failed", "failed"},
		{"cancelled", "cancelled"}, {"timeout", "timeout"},
	}
	for i, c := range cases {
		id := s.newBuild(map[string]any{"build_id": fmt.Sprintf("tb_st%d", i), "namespace": "default", "name": "n", "version": "1.0.0"})
		created := time.Now()
		if c.finish != "" {
			time.Sleep(5 * time.Millisecond)
			s.append(id, msgs(0, 2))
			if c.finish != "-" {
				s.want(s.finish(id, c.finish), 200)
			}
		}
		r := s.want(s.do("GET", "/v1/builds/"+id, adminKey, nil), 200)
		var m struct {
			Build map[string]any `json:"build"`
		}
		if err := json.Unmarshal(r.body, &m); err != nil || m.Build == nil {
			t.Fatalf("not {\"build\":{...}}: %s", r.body)
		}
		b := m.Build
		if b["status"] != c.want || b["id"] != id || b["templateId"] != "tmpl_1" {
			t.Errorf("%q: %s, want status %s", c.finish, r.body, c.want)
		}
		for k := range b {
			if strings.Contains(k, "_") {
				t.Errorf("field %q is not camelCase: %s", k, r.body)
			}
		}
		ca, err1 := time.Parse(time.RFC3339Nano, fmt.Sprint(b["createdAt"]))
		ua, err2 := time.Parse(time.RFC3339Nano, fmt.Sprint(b["updatedAt"]))
		if err1 != nil || err2 != nil || !strings.HasSuffix(b["createdAt"].(string), "Z") || !strings.HasSuffix(b["updatedAt"].(string), "Z") {
			t.Fatalf("createdAt/updatedAt not UTC RFC 3339: %s", r.body)
		}
		if ca.After(created.Add(time.Second)) || ua.Before(ca) {
			t.Errorf("createdAt %v updatedAt %v", ca, ua)
		}
		if c.finish != "" && !ua.After(ca) {
			t.Errorf("%q: updatedAt %v did not move past createdAt %v", c.finish, ua, ca)
		}
		_, hasFinished := b["finishedAt"]
		if hasFinished != (c.finish != "" && c.finish != "-") {
			t.Errorf("%q: finishedAt present %v: %s", c.finish, hasFinished, r.body)
		}
	}
	s.want(s.do("GET", "/v1/builds/nope", adminKey, nil), 404)
	s.want(s.do("GET", "/v1/builds/tb_st0", "", nil), 401)
}
