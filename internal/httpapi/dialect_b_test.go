package httpapi_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"buildlog/internal/httpapi"
	"buildlog/internal/sse"
	"buildlog/internal/testkit"
)

// versionBuild creates a build of template default/<name>/<version>.
func (s *server) versionBuild(id, name, version string) string {
	s.t.Helper()
	return s.newBuild(map[string]any{"build_id": id, "namespace": "default", "name": name, "version": version})
}

// get is a GET that fails the test rather than hang when a response that
// should end at once (a 204, a 400) is a stream that never does.
func (s *server) get(path, key string, hdr ...string) resp {
	s.t.Helper()
	req, err := http.NewRequest("GET", s.URL+path, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	return resp{res.StatusCode, res.Header, b}
}

func eventsPath(name, version string) string {
	return "/templates/default/" + name + "/" + version + "/build/events"
}

// bFrame is a dialect B frame's data, with the keys it carries, so that a
// test can tell an absent field from an empty one.
type bFrame struct {
	TS, Level, Phase, Source, Line string
	keys                           map[string]bool
}

func decodeB(t *testing.T, ev sse.Event) bFrame {
	t.Helper()
	var m map[string]string
	if err := json.Unmarshal(ev.Data, &m); err != nil {
		t.Fatalf("frame %s is not a JSON object of strings: %s", ev.ID, ev.Data)
	}
	f := bFrame{TS: m["ts"], Level: m["level"], Phase: m["phase"], Source: m["source"], Line: m["line"], keys: map[string]bool{}}
	for k := range m {
		switch k {
		case "ts", "level", "phase", "source", "line":
			f.keys[k] = true
		default:
			t.Fatalf("frame %s has field %q outside ts, level, phase, source, line: %s", ev.ID, k, ev.Data)
		}
	}
	return f
}

// Every entry maps to a frame: debug becomes info, the other levels stay;
// phase and source are carried when present and left out when absent; the
// terminal frame says how the build ended.
func TestBFrameMapping(t *testing.T) {
	s := newServer(t)
	id := s.versionBuild("tb_map", "map", "1.0.0")
	s.append(id, []map[string]any{
		{"message": "booting build VM", "phase": "boot", "level": "debug", "timestamp": "2026-06-08T17:00:01Z"},
		{"message": "npm install", "phase": "install", "source": "npm", "timestamp": "2026-06-08T17:00:14.5+02:00"},
		{"message": "careful", "level": "warn", "timestamp": "2026-06-08T17:00:15Z"},
		{"message": "boom", "level": "error", "source": "", "timestamp": "2026-06-08T17:00:16Z"},
	})
	s.want(s.finish(id, "ready"), 200)
	evs := s.open(eventsPath("map", "1.0.0"), adminKey).all(t, 5*time.Second)
	if len(evs) != 5 {
		t.Fatalf("%d frames, want 4 entries and the terminal one", len(evs))
	}
	want := []string{
		`{"ts":"2026-06-08T17:00:01Z","level":"info","phase":"boot","line":"booting build VM"}`,
		`{"ts":"2026-06-08T17:00:14.5+02:00","level":"info","phase":"install","source":"npm","line":"npm install"}`,
		`{"ts":"2026-06-08T17:00:15Z","level":"warn","line":"careful"}`,
		`{"ts":"2026-06-08T17:00:16Z","level":"error","source":"","line":"boom"}`,
	}
	for i, w := range want {
		if evs[i].ID != strconv.Itoa(i) || string(evs[i].Data) != w {
			t.Errorf("frame %d: id %q data %s\nwant id %d data %s", i, evs[i].ID, evs[i].Data, i, w)
		}
	}
	last := decodeB(t, evs[4])
	if last.Level != "success" || last.Phase != "ready" || evs[4].ID != "4" {
		t.Fatalf("terminal frame of a ready build: %s", evs[4].Data)
	}
	if _, err := time.Parse(time.RFC3339Nano, last.TS); err != nil {
		t.Fatalf("terminal frame ts %q: %v", last.TS, err)
	}
}

// The terminal frame for each way a build can end, including the one case
// where the level and phase come from earlier entries: a failed build
// carries the last phase seen, even to a client that resumes after them.
func TestBTerminalFrames(t *testing.T) {
	cases := []struct {
		status      string
		phases      []string // phases of the entries before finish ("" = none)
		level       string
		phase       string // "" = must be absent
		withMessage string
	}{
		{"ready", []string{"boot", "archive"}, "success", "ready", "golden snapshot ready"},
		{"ready", nil, "success", "ready", ""},
		{"cancelled", []string{"install"}, "warn", "cancel", "stopped by user"},
		{"timeout", []string{"install"}, "error", "timeout", ""},
		{"failed", []string{"boot", "install", ""}, "error", "install", "exit 1"},
		{"failed", []string{"", ""}, "error", "", ""},
		{"failed", nil, "error", "", ""},
	}
	s := newServer(t)
	for i, c := range cases {
		name := fmt.Sprintf("term%d", i)
		id := s.versionBuild("tb_"+name, name, "2.0.0-rc.1+b5")
		var entries []map[string]any
		for j, p := range c.phases {
			e := map[string]any{"message": fmt.Sprintf("step %d", j), "level": "info"}
			if p != "" {
				e["phase"] = p
			}
			entries = append(entries, e)
		}
		if len(entries) > 0 {
			s.append(id, entries)
		}
		body := map[string]any{"status": c.status}
		if c.withMessage != "" {
			body["message"] = c.withMessage
		}
		s.want(s.do("POST", "/v1/templates/builds/"+id+"/finish", adminKey, body), 200)

		path := eventsPath(name, "2.0.0-rc.1+b5")
		evs := s.open(path, adminKey).all(t, 5*time.Second)
		if len(evs) != len(c.phases)+1 {
			t.Fatalf("%s: %d frames, want %d", c.status, len(evs), len(c.phases)+1)
		}
		// The whole stream, and a resume that sees only the terminal frame.
		var hdr []string
		if len(c.phases) > 0 {
			hdr = []string{"Last-Event-ID", strconv.Itoa(len(c.phases) - 1)}
		}
		resumed := s.open(path, adminKey, hdr...).all(t, 5*time.Second)
		if len(resumed) != 1 || resumed[0].ID != strconv.Itoa(len(c.phases)) {
			t.Fatalf("%s: resume before the terminal frame gave %d frames", c.status, len(resumed))
		}
		for _, ev := range []sse.Event{evs[len(evs)-1], resumed[0]} {
			f := decodeB(t, ev)
			if f.Level != c.level || f.Phase != c.phase || f.keys["phase"] != (c.phase != "") {
				t.Errorf("%s after phases %q: terminal frame %s, want level %s phase %q", c.status, c.phases, ev.Data, c.level, c.phase)
			}
			if c.withMessage != "" && f.Line != c.withMessage {
				t.Errorf("%s: terminal line %q, want the finish message %q", c.status, f.Line, c.withMessage)
			}
		}
	}
}

// The raw bytes: retry first, then id and data lines only. A frame with an
// event: line would not reach EventSource.onmessage.
func TestBNoEventLine(t *testing.T) {
	s := newServer(t)
	id := s.versionBuild("tb_raw", "raw", "1.0.0")
	s.append(id, []map[string]any{{"message": "hi", "timestamp": "2026-03-17T00:00:12Z", "phase": "boot"}})
	s.want(s.finish(id, "ready"), 200)
	r := s.want(s.do("GET", eventsPath("raw", "1.0.0"), adminKey, nil), 200)
	if ct := r.header.Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
		t.Fatalf("content type %q", ct)
	}
	if r.header.Get("Cache-Control") != "no-cache" || r.header.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("stream headers %v", r.header)
	}
	body := string(r.body)
	retry, frames, _ := strings.Cut(body, "\n\n")
	if !strings.HasPrefix(retry, "retry: ") {
		t.Fatalf("stream does not begin with retry: %q", body)
	}
	first, rest, _ := strings.Cut(frames, "\n\n")
	if first != `id: 0`+"\n"+`data: {"ts":"2026-03-17T00:00:12Z","level":"info","phase":"boot","line":"hi"}` {
		t.Fatalf("first frame %q", first)
	}
	if strings.Contains(body, "event:") {
		t.Fatalf("a frame has an event: line: %q", body)
	}
	if !strings.HasPrefix(rest, "id: 1\ndata: {") || !strings.HasSuffix(rest, "}\n\n") || strings.Count(rest, "\n") != 3 {
		t.Fatalf("terminal frame %q", rest)
	}
}

// The stream follows without being asked: open before any entry, it
// sends keepalives while the build is idle, every frame as it is
// committed, and closes by itself after the terminal frame.
func TestBFollowsUntilTerminal(t *testing.T) {
	s := newServer(t, func(c *httpapi.Config) { c.Keepalive = 50 * time.Millisecond })
	id := s.versionBuild("tb_live", "live", "1.0.0")
	st := s.open(eventsPath("live", "1.0.0"), adminKey)
	if st.code != 200 {
		t.Fatalf("status %d", st.code)
	}
	stop := time.AfterFunc(20*time.Second, st.stop)
	defer stop.Stop()
	br := bufio.NewReader(st.resp.Body)
	keepalives := 0
	for keepalives < 2 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream of an idle build ended after %d keepalives: %v", keepalives, err)
		}
		if strings.HasPrefix(line, "id:") || strings.HasPrefix(line, "data:") {
			t.Fatalf("a frame before any entry: %q", line)
		}
		if line == ": keepalive\n" {
			keepalives++
		}
	}
	go func() {
		for i := range 5 {
			s.append(id, msgs(i*3, 3))
			time.Sleep(20 * time.Millisecond)
		}
		s.finish(id, "failed")
	}()
	evs := testkit.ReadEvents(t, sse.NewReader(br))
	if len(evs) != 16 {
		t.Fatalf("%d frames, want 15 entries and the terminal one", len(evs))
	}
	for i, ev := range evs {
		if ev.ID != strconv.Itoa(i) || ev.Type != "" {
			t.Fatalf("frame %d: id %q type %q", i, ev.ID, ev.Type)
		}
		if i < 15 && decodeB(t, ev).Line != "line "+strconv.Itoa(i) {
			t.Fatalf("frame %d: %s", i, ev.Data)
		}
	}
	if f := decodeB(t, evs[15]); f.Level != "error" || f.keys["phase"] {
		t.Fatalf("terminal frame of a failed build without phases: %s", evs[15].Data)
	}
}

// Last-Event-ID resumes after that frame, as in dialect A; a resume at or
// past the end of a finished build is 204 so EventSource stops.
func TestBResume(t *testing.T) {
	s := newServer(t)
	id := s.versionBuild("tb_res", "res", "1.0.0")
	s.append(id, msgs(0, 6))
	p := eventsPath("res", "1.0.0")

	// Running: resume in the middle follows to the end.
	st := s.open(p, adminKey, "Last-Event-ID", "3")
	go func() { time.Sleep(50 * time.Millisecond); s.append(id, msgs(6, 2)); s.finish(id, "ready") }()
	evs := st.all(t, 10*time.Second)
	if len(evs) != 5 || evs[0].ID != "4" || evs[4].ID != "8" {
		t.Fatalf("resume after 3: %d frames %v", len(evs), evs)
	}
	for i, ev := range evs {
		if ev.ID != strconv.Itoa(4+i) {
			t.Fatalf("frame %d id %q", i, ev.ID)
		}
	}
	// Finished: from 0, from the terminal frame, and past it.
	if evs := s.open(p, adminKey).all(t, 5*time.Second); len(evs) != 9 {
		t.Fatalf("full replay: %d frames", len(evs))
	}
	if evs := s.open(p, adminKey, "Last-Event-ID", "7").all(t, 5*time.Second); len(evs) != 1 || evs[0].ID != "8" {
		t.Fatalf("resume after 7: %v", evs)
	}
	for _, last := range []string{"8", "9", "1000"} {
		r := s.want(s.get(p, adminKey, "Last-Event-ID", last), 204)
		if len(r.body) != 0 {
			t.Fatalf("204 with a body: %q", r.body)
		}
	}
	// Strict parsing: a bad id is a 400 naming the header.
	for _, bad := range []string{"-1", "x", "1.0", "18446744073709551615"} {
		msg := s.want(s.do("GET", p, adminKey, nil, "Last-Event-ID", bad), 400).errMessage(t)
		if !strings.Contains(msg, "Last-Event-ID") {
			t.Errorf("Last-Event-ID %q: message %q", bad, msg)
		}
	}
	// A running build resumed past its end waits, and ends with nothing if
	// the build finishes short of that point.
	id2 := s.versionBuild("tb_res2", "res2", "1.0.0")
	s.append(id2, msgs(0, 2))
	st = s.open(eventsPath("res2", "1.0.0"), adminKey, "Last-Event-ID", "10")
	if st.code != 200 {
		t.Fatalf("past the end of a running build: %d", st.code)
	}
	go func() { time.Sleep(50 * time.Millisecond); s.finish(id2, "cancelled") }()
	if evs := st.all(t, 10*time.Second); len(evs) != 0 {
		t.Fatalf("%d frames past the end", len(evs))
	}
}

// The route names a template version; the stream is its newest build.
func TestBNewestBuildOfVersion(t *testing.T) {
	s := newServer(t)
	s.want(s.do("GET", eventsPath("nv", "1.0.0"), adminKey, nil), 404)
	old := s.versionBuild("tb_old", "nv", "1.0.0")
	s.append(old, []map[string]any{{"message": "old build"}})
	s.want(s.finish(old, "failed"), 200)
	s.versionBuild("tb_other_version", "nv", "1.0.1")
	time.Sleep(5 * time.Millisecond) // distinct creation times
	nw := s.versionBuild("tb_new", "nv", "1.0.0")
	s.append(nw, []map[string]any{{"message": "new build"}})
	s.want(s.finish(nw, "ready"), 200)

	evs := s.open(eventsPath("nv", "1.0.0"), adminKey).all(t, 5*time.Second)
	if len(evs) != 2 || decodeB(t, evs[0]).Line != "new build" || decodeB(t, evs[1]).Level != "success" {
		t.Fatalf("newest build of nv/1.0.0: %v", evs)
	}

	// A browser's stream token is for one build: once a newer build of the
	// version exists, the route no longer leads to it.
	tok := s.want(s.do("POST", "/v1/templates/builds/"+nw+"/stream-token", adminKey, nil), 201).json(t)["token"].(string)
	if evs := s.open(eventsPath("nv", "1.0.0")+"?token="+tok, "").all(t, 5*time.Second); len(evs) != 2 {
		t.Fatalf("with a stream token: %d frames", len(evs))
	}
	oldTok := s.want(s.do("POST", "/v1/templates/builds/"+old+"/stream-token", adminKey, nil), 201).json(t)["token"].(string)
	s.want(s.get(eventsPath("nv", "1.0.0")+"?token="+oldTok, ""), 401)

	// Not found: another version, name or namespace; another team's build.
	for _, p := range []string{
		eventsPath("nv", "1.0.2"), eventsPath("nope", "1.0.0"),
		"/templates/other/nv/1.0.0/build/events", "/templates/-bad-/nv/1.0.0/build/events",
	} {
		s.want(s.do("GET", p, adminKey, nil), 404).errMessage(t)
	}
	acme, _ := s.newKey("acme", "read")
	s.want(s.do("GET", eventsPath("nv", "1.0.0"), acme, nil), 404)
	s.want(s.do("GET", eventsPath("nv", "1.0.0"), "", nil), 401)

	// A build made without a namespace is in namespace default.
	s.want(s.do("POST", "/v1/templates/tmpl_1/builds", adminKey, map[string]any{"build_id": "tb_nons", "name": "nons", "version": "3.1.4"}), 201)
	s.append("tb_nons", msgs(0, 1))
	s.want(s.finish("tb_nons", "ready"), 200)
	if evs := s.open(eventsPath("nons", "3.1.4"), adminKey).all(t, 5*time.Second); len(evs) != 2 {
		t.Fatalf("build without a namespace under default: %d frames", len(evs))
	}

	// A version that is not semver: 400 at creation, and on the route.
	for _, v := range []string{"v1.0.0", "1.0", "01.0.0", "1.0.0-"} {
		msg := s.want(s.do("POST", "/v1/templates/tmpl_1/builds", adminKey,
			map[string]any{"namespace": "default", "name": "nv", "version": v}), 400).errMessage(t)
		if !strings.Contains(msg, "version") {
			t.Errorf("create with version %q: %q", v, msg)
		}
		msg = s.want(s.do("GET", eventsPath("nv", v), adminKey, nil), 400).errMessage(t)
		if !strings.Contains(msg, "version") {
			t.Errorf("events of version %q: %q", v, msg)
		}
	}
}
