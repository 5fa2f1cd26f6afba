package httpapi_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/httpapi"
)

// aPage is dialect A's JSON form.
type aPage struct {
	Entries    []buildlog.Entry `json:"entries"`
	NextOffset *uint64          `json:"next_offset"`
	Done       *bool            `json:"done"`
}

func (s *server) page(id, query string) aPage {
	s.t.Helper()
	r := s.want(s.do("GET", "/v1/templates/builds/"+id+"/logs"+query, adminKey, nil, "Accept", "application/json"), 200)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		s.t.Fatalf("JSON page content type %q", ct)
	}
	var p aPage
	if err := json.Unmarshal(r.body, &p); err != nil || p.Entries == nil || p.NextOffset == nil || p.Done == nil {
		s.t.Fatalf("not {entries, next_offset, done}: %v %s", err, r.body)
	}
	return p
}

func (p aPage) offsets() []uint64 {
	out := make([]uint64, len(p.Entries))
	for i, e := range p.Entries {
		out[i] = e.Offset
	}
	return out
}

// ndjson reads a whole NDJSON response: the entries' offsets, each line
// checked to be an entry; blank lines (keepalives) are counted apart.
func ndjson(t *testing.T, body []byte) (offs []uint64, lines []string, blanks int) {
	t.Helper()
	for _, l := range strings.SplitAfter(string(body), "\n") {
		if l == "" {
			continue
		}
		if !strings.HasSuffix(l, "\n") {
			t.Fatalf("NDJSON ends mid-line: %q", l)
		}
		l = strings.TrimSuffix(l, "\n")
		if l == "" {
			blanks++
			continue
		}
		var e buildlog.Entry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("NDJSON line is not an entry: %q", l)
		}
		offs, lines = append(offs, e.Offset), append(lines, l)
	}
	return offs, lines, blanks
}

// sseOffsets reads a whole SSE response's ids, checking each matches the
// offset in its data.
func sseOffsets(t *testing.T, st *stream) []uint64 {
	t.Helper()
	evs := st.all(t, 10*time.Second)
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		var e buildlog.Entry
		if err := json.Unmarshal(ev.Data, &e); err != nil || ev.Type != "log" {
			t.Fatalf("event %s type %q: %s", ev.ID, ev.Type, ev.Data)
		}
		if ev.ID != strconv.FormatUint(e.Offset, 10) {
			t.Fatalf("event id %s carries offset %d", ev.ID, e.Offset)
		}
		out[i] = e.Offset
	}
	return out
}

// NDJSON streams the same entries, byte for byte, as the event stream's
// data lines; following, it ends after the terminal entry.
func TestANDJSON(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	s.append(id, msgs(0, 5))
	s.want(s.finish(id, "ready"), 200)
	p := "/v1/templates/builds/" + id + "/logs"
	r := s.want(s.do("GET", p, adminKey, nil, "Accept", "application/x-ndjson"), 200)
	if ct := r.header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("content type %q", ct)
	}
	offs, lines, _ := ndjson(t, r.body)
	if !slices.Equal(offs, []uint64{0, 1, 2, 3, 4, 5}) {
		t.Fatalf("offsets %v", offs)
	}
	evs := s.open(p, adminKey).all(t, 5*time.Second)
	for i, ev := range evs {
		if string(ev.Data) != lines[i] {
			t.Fatalf("entry %d differs:\nNDJSON %s\nSSE    %s", i, lines[i], ev.Data)
		}
	}
	s.want(s.get(p+"?offset=6", adminKey, "Accept", "application/x-ndjson"), 204)

	// Following a running build: idle keepalives are blank lines, live
	// entries arrive, the terminal one ends the response.
	s2 := newServer(t, func(c *httpapi.Config) { c.Keepalive = 50 * time.Millisecond })
	id2 := s2.newBuild(nil)
	st := s2.open("/v1/templates/builds/"+id2+"/logs?follow=true", adminKey, "Accept", "application/x-ndjson")
	if st.code != 200 {
		t.Fatalf("follow: %d", st.code)
	}
	stop := time.AfterFunc(20*time.Second, st.stop)
	defer stop.Stop()
	br := bufio.NewReader(st.resp.Body)
	for range 2 {
		if l, err := br.ReadString('\n'); err != nil || l != "\n" {
			t.Fatalf("idle NDJSON stream sent %q, %v; want a blank keepalive line", l, err)
		}
	}
	go func() { s2.append(id2, msgs(0, 3)); s2.finish(id2, "failed") }()
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if offs, _, _ := ndjson(t, rest); !slices.Equal(offs, []uint64{0, 1, 2, 3}) {
		t.Fatalf("followed offsets %v", offs)
	}
}

// The JSON form: one page, limit default 1000 and at most 10000,
// next_offset continuing exactly, done only at a finished build's end.
func TestAJSONPage(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	for i := range 3 {
		s.append(id, msgs(i*500, 500))
	}
	p := s.page(id, "")
	if len(p.Entries) != 1000 || *p.NextOffset != 1000 || *p.Done || p.Entries[999].Message != "line 999" {
		t.Fatalf("default page: %d entries, next %d, done %v", len(p.Entries), *p.NextOffset, *p.Done)
	}
	p = s.page(id, "?offset=1000")
	if len(p.Entries) != 500 || *p.NextOffset != 1500 || *p.Done {
		t.Fatalf("rest of a running build: %d entries, next %d, done %v", len(p.Entries), *p.NextOffset, *p.Done)
	}
	// At the end of a running build: empty, not done.
	if p = s.page(id, "?offset=1500"); len(p.Entries) != 0 || *p.NextOffset != 1500 || *p.Done {
		t.Fatalf("end of a running build: %+v", p)
	}
	s.want(s.finish(id, "ready"), 200)
	if p = s.page(id, "?limit=10000"); len(p.Entries) != 1501 || *p.NextOffset != 1501 || !*p.Done {
		t.Fatalf("limit=10000: %d entries, next %d, done %v", len(p.Entries), *p.NextOffset, *p.Done)
	}
	if p = s.page(id, "?cursor=1499&limit=1"); p.Entries[0].Offset != 1499 || *p.NextOffset != 1500 || *p.Done {
		t.Fatalf("one before the terminal entry: %+v", p)
	}
	if p = s.page(id, "?offset=1500&limit=1"); p.Entries[0].Kind != buildlog.KindEnd || !*p.Done {
		t.Fatalf("terminal page: %+v", p)
	}
	// Past the end of a finished build the page is empty and done (no 204:
	// that is for event streams).
	if p = s.page(id, "?offset=1501"); len(p.Entries) != 0 || !*p.Done {
		t.Fatalf("past the end: %+v", p)
	}
	// Paging with next_offset reads everything once.
	var got []uint64
	for off := uint64(0); ; {
		p := s.page(id, fmt.Sprintf("?offset=%d&limit=333", off))
		got = append(got, p.offsets()...)
		off = *p.NextOffset
		if *p.Done {
			break
		}
	}
	if len(got) != 1501 || got[0] != 0 || got[1500] != 1500 {
		t.Fatalf("paged %d entries", len(got))
	}
	for _, bad := range []string{"0", "10001", "abc", "-5", ""} {
		msg := s.want(s.do("GET", "/v1/templates/builds/"+id+"/logs?limit="+bad, adminKey, nil, "Accept", "application/json"), 400).errMessage(t)
		if !strings.Contains(msg, "limit") || !strings.Contains(msg, "10000") {
			t.Errorf("limit=%q: %q", bad, msg)
		}
	}
}

// filterBuild makes a finished build with entries of every level and
// several kinds and phases; offsets 0..6, 6 is the terminal entry.
func filterBuild(s *server) string {
	s.t.Helper()
	id := s.newBuild(nil)
	s.append(id, []map[string]any{
		{"message": "boot", "level": "debug", "phase": "boot"},                                                // 0
		{"message": "cache", "kind": "cache", "phase": "cache", "cache_kind": "layer", "cache_status": "hit"}, // 1
		{"message": "careful", "level": "warn", "kind": "warning", "phase": "install"},                        // 2
		{"message": "failed", "level": "error", "kind": "error", "phase": "install"},                          // 3
		{"message": "again", "kind": "retry", "phase": "retry", "attempt": 2, "max_attempts": 3},              // 4
		{"message": "plain"}, // 5
	})
	s.want(s.finish(id, "ready"), 200) // 6: kind end, level info
	return id
}

var filterCases = []struct {
	query string
	want  []uint64
}{
	{"", []uint64{0, 1, 2, 3, 4, 5, 6}},
	{"level=debug", []uint64{0, 1, 2, 3, 4, 5, 6}},
	{"level=info", []uint64{1, 2, 3, 4, 5, 6}},
	{"level=warn", []uint64{2, 3, 6}},
	{"level=error", []uint64{3, 6}},
	{"kind=cache", []uint64{1, 6}},
	{"kind=cache,retry", []uint64{1, 4, 6}},
	{"kind=end", []uint64{6}},
	{"phase=install", []uint64{2, 3, 6}},
	{"phase=boot,retry", []uint64{0, 4, 6}},
	{"phase=nothing", []uint64{6}},
	{"level=warn&kind=error&phase=install", []uint64{3, 6}},
	{"level=warn&offset=3", []uint64{3, 6}},
	{"level=info&cursor=4", []uint64{4, 5, 6}},
	{"phase=install&tail=4", []uint64{3, 6}},
}

// Filters work on every form and never renumber: ids and offsets are the
// entries' true offsets, and the terminal entry always comes through so
// streams end and pages reach done.
func TestAFiltersEveryForm(t *testing.T) {
	s := newServer(t)
	id := filterBuild(s)
	p := "/v1/templates/builds/" + id + "/logs?"
	for _, c := range filterCases {
		if got := sseOffsets(t, s.open(p+c.query, adminKey)); !slices.Equal(got, c.want) {
			t.Errorf("SSE %s: %v, want %v", c.query, got, c.want)
		}
		if got := sseOffsets(t, s.open(p+c.query+"&follow=true", adminKey)); !slices.Equal(got, c.want) {
			t.Errorf("SSE follow %s: %v, want %v", c.query, got, c.want)
		}
		r := s.want(s.do("GET", p+c.query, adminKey, nil, "Accept", "application/x-ndjson"), 200)
		if got, _, _ := ndjson(t, r.body); !slices.Equal(got, c.want) {
			t.Errorf("NDJSON %s: %v, want %v", c.query, got, c.want)
		}
		pg := s.page(id, "?"+c.query)
		if got := pg.offsets(); !slices.Equal(got, c.want) || *pg.NextOffset != 7 || !*pg.Done {
			t.Errorf("JSON %s: %v next %d done %v, want %v", c.query, got, *pg.NextOffset, *pg.Done, c.want)
		}
	}
	// A filtered page's next_offset is past the last entry it examined,
	// matched or not, so paging on from it skips nothing and repeats nothing.
	var got []uint64
	var nexts []uint64
	for off := uint64(0); ; {
		pg := s.page(id, fmt.Sprintf("?level=warn&limit=1&offset=%d", off))
		got = append(got, pg.offsets()...)
		off = *pg.NextOffset
		nexts = append(nexts, off)
		if *pg.Done {
			break
		}
	}
	if !slices.Equal(got, []uint64{2, 3, 6}) || !slices.Equal(nexts, []uint64{3, 4, 7}) {
		t.Fatalf("filtered paging: entries %v next offsets %v", got, nexts)
	}
	// Last-Event-ID resumes by true offset under a filter.
	if got := sseOffsets(t, s.open(p+"level=warn", adminKey, "Last-Event-ID", "2")); !slices.Equal(got, []uint64{3, 6}) {
		t.Fatalf("filtered resume after 2: %v", got)
	}
}

// A filtered follower of a running build gets only what matches, live,
// and its stream still ends at the terminal entry that does not match.
func TestAFilterFollowLive(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	st := s.open("/v1/templates/builds/"+id+"/logs?follow=true&level=error", adminKey)
	nd := s.open("/v1/templates/builds/"+id+"/logs?follow=true&kind=warning", adminKey, "Accept", "application/x-ndjson")
	go func() {
		for i := range 10 {
			level, kind := "info", "message"
			if i%3 == 0 {
				level = "error"
			}
			if i%4 == 0 {
				kind = "warning"
			}
			s.append(id, []map[string]any{{"message": strconv.Itoa(i), "level": level, "kind": kind}})
			time.Sleep(5 * time.Millisecond)
		}
		s.finish(id, "ready")
	}()
	if got := sseOffsets(t, st); !slices.Equal(got, []uint64{0, 3, 6, 9, 10}) {
		t.Fatalf("level=error follower: %v", got)
	}
	body, err := io.ReadAll(nd.resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := ndjson(t, body); !slices.Equal(got, []uint64{0, 4, 8, 10}) {
		t.Fatalf("kind=warning NDJSON follower: %v", got)
	}
}

func TestATail(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	s.append(id, msgs(0, 10))
	p := "/v1/templates/builds/" + id + "/logs"

	// Running build: tail then follow live.
	st := s.open(p+"?tail=2&follow=true", adminKey)
	go func() { time.Sleep(50 * time.Millisecond); s.append(id, msgs(10, 2)); s.finish(id, "ready") }()
	if got := sseOffsets(t, st); !slices.Equal(got, []uint64{8, 9, 10, 11, 12}) {
		t.Fatalf("tail=2 follow: %v", got)
	}
	// Finished build (13 entries).
	cases := []struct {
		query  string
		lastID string
		want   []uint64
	}{
		{"?tail=3", "", []uint64{10, 11, 12}},
		{"?tail=1", "", []uint64{12}},
		{"?tail=13", "", seq(0, 13)},
		{"?tail=1000", "", seq(0, 13)},
		{"?tail=18446744073709551615", "", seq(0, 13)},
		// A reconnect's Last-Event-ID wins over tail, so an EventSource
		// opened with ?tail= resumes where it was.
		{"?tail=3", "4", seq(5, 13)},
	}
	for _, c := range cases {
		var hdr []string
		if c.lastID != "" {
			hdr = []string{"Last-Event-ID", c.lastID}
		}
		if got := sseOffsets(t, s.open(p+c.query, adminKey, hdr...)); !slices.Equal(got, c.want) {
			t.Errorf("SSE %s (Last-Event-ID %q): %v, want %v", c.query, c.lastID, got, c.want)
		}
		r := s.want(s.do("GET", p+c.query, adminKey, nil, append(hdr, "Accept", "application/x-ndjson")...), 200)
		if got, _, _ := ndjson(t, r.body); !slices.Equal(got, c.want) {
			t.Errorf("NDJSON %s: %v, want %v", c.query, got, c.want)
		}
		if c.lastID == "" {
			if got := s.page(id, c.query).offsets(); !slices.Equal(got, c.want) {
				t.Errorf("JSON %s: %v, want %v", c.query, got, c.want)
			}
		}
	}
	// tail=0 starts at the end: nothing more will come of a finished build.
	s.want(s.get(p+"?tail=0", adminKey), 204)
	if pg := s.page(id, "?tail=0"); len(pg.Entries) != 0 || !*pg.Done || *pg.NextOffset != 13 {
		t.Fatalf("JSON tail=0: %+v", pg)
	}
	for _, q := range []string{"?tail=-1", "?tail=abc", "?tail=", "?tail=2&offset=1", "?tail=2&cursor=1"} {
		msg := s.want(s.do("GET", p+q, adminKey, nil), 400).errMessage(t)
		if !strings.Contains(msg, "tail") {
			t.Errorf("%s: %q does not name tail", q, msg)
		}
	}
}

func seq(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// Every malformed query parameter, on every dialect that takes it, is a
// 400 naming it, and none of them disturbs the build or open streams.
func TestBadQueryParams(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(map[string]any{"namespace": "default", "name": "bad", "version": "1.0.0"})
	s.append(id, msgs(0, 3))
	a := "/v1/templates/builds/" + id + "/logs"
	b := eventsPath("bad", "1.0.0")
	c := "/v1/builds/" + id + "/logs"
	followerA := s.open(a+"?follow=true", adminKey)
	followerB := s.open(b, adminKey)
	pagesBefore := s.poll(id, "?startFromHead=true")

	type badCase struct{ path, query, param string }
	var cases []badCase
	for _, q := range []struct{ query, param string }{
		{"offset=-1", "offset"}, {"offset=1e3", "offset"}, {"offset=", "offset"},
		{"cursor=x", "cursor"}, {"follow=maybe", "follow"}, {"follow=", "follow"},
		{"limit=abc", "limit"}, {"limit=0", "limit"}, {"limit=10001", "limit"},
		{"level=loud", "level"}, {"level=", "level"}, {"level=INFO", "level"},
		{"kind=bogus", "kind"}, {"kind=cache,", "kind"}, {"phase=BAD", "phase"}, {"phase=", "phase"},
		{"tail=-1", "tail"}, {"tail=x", "tail"},
		{"offset=1&follow=maybe", "follow"},
	} {
		cases = append(cases, badCase{a, q.query, q.param})
	}
	cases = append(cases,
		badCase{b, "offset=-1", "offset"}, badCase{b, "cursor=abc", "cursor"},
		badCase{c, "limit=abc", "limit"}, badCase{c, "limit=-1", "limit"},
		badCase{c, "startFromHead=maybe", "startFromHead"}, badCase{c, "nextToken=%00", "nextToken"},
	)
	for _, bc := range cases {
		accepts := []string{""}
		if bc.path == a {
			accepts = []string{"text/event-stream", "application/x-ndjson", "application/json"}
		}
		for _, acc := range accepts {
			var hdr []string
			if acc != "" {
				hdr = []string{"Accept", acc}
			}
			r := s.get(bc.path+"?"+bc.query, adminKey, hdr...)
			if r.code != 400 || r.header.Get("Content-Type") != "application/json" {
				t.Errorf("%s?%s (%s): %s", bc.path, bc.query, acc, r)
				continue
			}
			if msg := r.errMessage(t); !strings.Contains(msg, bc.param) {
				t.Errorf("%s?%s: message %q does not name %s", bc.path, bc.query, msg, bc.param)
			}
		}
	}
	// A Last-Event-ID that is not an offset, on both SSE dialects.
	for _, p := range []string{a, b} {
		s.want(s.do("GET", p, adminKey, nil, "Last-Event-ID", "-1"), 400)
	}

	bd := s.build(id)
	if bd["status"] != "building" || bd["next_offset"].(float64) != 3 {
		t.Fatalf("bad requests changed the build: %v", bd)
	}
	if after := s.poll(id, "?startFromHead=true"); strings.Join(after.Logs, "\n") != strings.Join(pagesBefore.Logs, "\n") {
		t.Fatalf("log changed: %q -> %q", pagesBefore.Logs, after.Logs)
	}
	s.append(id, msgs(3, 2))
	s.want(s.finish(id, "ready"), 200)
	if got := sseOffsets(t, followerA); !slices.Equal(got, seq(0, 6)) {
		t.Fatalf("dialect A follower after bad requests: %v", got)
	}
	if evs := followerB.all(t, 10*time.Second); len(evs) != 6 || evs[5].ID != "5" {
		t.Fatalf("dialect B follower after bad requests: %d frames", len(evs))
	}
}

// A parameter whose escaping is broken is a 400 naming it, not silently
// dropped (which would replay from 0 instead of the offset asked for).
func TestMalformedQueryEscapes(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(map[string]any{"namespace": "default", "name": "esc", "version": "1.0.0"})
	s.append(id, msgs(0, 3))
	for _, c := range []struct{ path, query, param string }{
		{"/v1/templates/builds/" + id + "/logs", "offset=%zz", "offset"},
		{"/v1/templates/builds/" + id + "/logs", "follow=true&level=%", "level"},
		{"/v1/templates/builds/" + id + "/logs", "offset=1;2", "offset"},
		{"/v1/templates/builds/" + id + "/logs", "of%zzset=1", "query"},
		{eventsPath("esc", "1.0.0"), "offset=%g1", "offset"},
		{"/v1/builds/" + id + "/logs", "limit=1%", "limit"},
		{"/v1/builds/" + id + "/logs", "nextToken=%%", "nextToken"},
	} {
		msg := s.want(s.do("GET", c.path+"?"+c.query, adminKey, nil), 400).errMessage(t)
		if !strings.Contains(msg, c.param) {
			t.Errorf("?%s: message %q does not name %s", c.query, msg, c.param)
		}
	}
	// Well-formed escapes are fine.
	pg := s.page(id, "?offset=%31&level=%69nfo")
	if len(pg.Entries) != 2 || pg.Entries[0].Offset != 1 {
		t.Fatalf("escaped offset: %+v", pg)
	}
}
