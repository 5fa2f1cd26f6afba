package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/sse"
)

// The size cap seen through every dialect: SSE, NDJSON and JSON pages of
// dialect A (filtered or not), dialect B's frames, dialect C's polling,
// from every start and across resumes while the dropped range grows. The
// store suite checks the store's side (internal/storetest); these check
// that no dialect loses, repeats or mislabels an offset around a notice.

const (
	capMax  = 4000
	capHead = 1000
)

// capServer is a server whose store caps each log at capMax bytes, the
// first capHead of them kept.
func capServer(t *testing.T) *server {
	t.Helper()
	s := newServer(t)
	st, ok := s.store.(interface {
		SetLogCap(buildlog.LogCap, func(int64))
	})
	if !ok {
		t.Fatal("the store has no size cap")
	}
	st.SetLogCap(buildlog.LogCap{MaxBytes: capMax, HeadBytes: capHead}, nil)
	return s
}

// capBuild is a build written past its cap over HTTP, and what it got.
type capBuild struct {
	id, version string
	msgs        map[uint64]string // every appended entry's message, by offset
	replies     []capReply        // every batch's acknowledgement
	next        uint64
}

type capReply struct {
	first uint64
	body  []byte // the batch as sent
	reply []byte // the 200 it got
}

func newCapBuild(s *server, id, version string) *capBuild {
	s.t.Helper()
	s.newBuild(map[string]any{"build_id": id, "namespace": "cap", "name": "img", "version": version})
	return &capBuild{id: id, version: version, msgs: map[uint64]string{}}
}

// write appends batches of 3 entries with first_offset, as an idempotent
// producer does.
func (b *capBuild) write(s *server, batches int) {
	s.t.Helper()
	for range batches {
		var es []map[string]any
		for j := range 3 {
			m := fmt.Sprintf("%s line %05d ü\t\"%d\"", b.id, b.next+uint64(j), j)
			es = append(es, map[string]any{"message": m, "level": "info"})
		}
		body, _ := json.Marshal(map[string]any{"entries": es, "first_offset": b.next})
		r := s.want(s.do("POST", "/v1/templates/builds/"+b.id+"/logs", adminKey, body), 200)
		for j, e := range es {
			b.msgs[b.next+uint64(j)] = e["message"].(string)
		}
		b.replies = append(b.replies, capReply{first: b.next, body: body, reply: r.body})
		b.next += 3
	}
}

// omitted is the build's dropped range as its JSON says.
func omitted(s *server, id string) (om buildlog.Omitted, kept uint64) {
	s.t.Helper()
	r := s.want(s.do("GET", "/v1/templates/builds/"+id, adminKey, nil), 200)
	var b struct {
		Omitted   *buildlog.Omitted `json:"omitted"`
		KeptBytes *uint64           `json:"kept_bytes"`
	}
	if err := json.Unmarshal(r.body, &b); err != nil || b.KeptBytes == nil {
		s.t.Fatalf("build JSON without kept_bytes: %s", r.body)
	}
	if b.Omitted == nil {
		s.t.Fatalf("nothing omitted yet: %s", r.body)
	}
	return *b.Omitted, *b.KeptBytes
}

// item is one thing a read returned: an entry at off, or a notice at off
// standing for from..to.
type item struct {
	off      uint64
	notice   bool
	from, to uint64
	msg      string
	kind     buildlog.Kind
}

// entryItem reads a dialect A entry; a notice must be a well-formed one.
func entryItem(t *testing.T, data []byte) item {
	t.Helper()
	var e buildlog.Entry
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatalf("not an entry: %s", data)
	}
	it := item{off: e.Offset, msg: e.Message, kind: e.Kind}
	var m struct {
		From    *uint64 `json:"omitted_from"`
		To      *uint64 `json:"omitted_to"`
		Entries uint64  `json:"omitted_entries"`
		Bytes   uint64  `json:"omitted_bytes"`
	}
	if len(e.ResultMetadata) > 0 && json.Unmarshal(e.ResultMetadata, &m) == nil && m.From != nil && m.To != nil {
		it.notice, it.from, it.to = true, *m.From, *m.To
		if e.Kind != buildlog.KindWarning || e.Level != buildlog.LevelWarn || e.Offset != *m.To ||
			m.Entries != *m.To-*m.From+1 || m.Bytes == 0 || !strings.Contains(e.Message, "omitted") {
			t.Fatalf("malformed notice: %s", data)
		}
		if want := buildlog.Thousands(m.Entries) + " lines ("; !strings.Contains(e.Message, want) {
			t.Fatalf("notice for %d entries says %q", m.Entries, e.Message)
		}
	}
	return it
}

// account checks that items, read from offset from, account for every
// offset from there to the build's end exactly once: each entry holds what
// was appended at its offset, each notice follows on from the offset
// before it, and nothing in om is read as an entry. It returns the
// notices met.
func (b *capBuild) account(t *testing.T, what string, items []item, from, end uint64, om buildlog.Omitted) int {
	t.Helper()
	pos, notices := from, 0
	for i, it := range items {
		if it.notice {
			if it.from != pos || it.to < it.from {
				t.Fatalf("%s: item %d: notice for [%d, %d] where %d was next", what, i, it.from, it.to, pos)
			}
			notices++
			pos = it.to + 1
			continue
		}
		if it.off != pos {
			t.Fatalf("%s: item %d: entry at %d where %d was next", what, i, it.off, pos)
		}
		if it.off >= om.From && it.off <= om.To {
			t.Fatalf("%s: dropped offset %d read as an entry", what, it.off)
		}
		if want, ok := b.msgs[it.off]; ok && it.msg != want {
			t.Fatalf("%s: entry %d is %q, want %q", what, it.off, it.msg, want)
		}
		pos++
	}
	if pos != end {
		t.Fatalf("%s: read ends at %d, want %d", what, pos, end)
	}
	return notices
}

func sseItems(t *testing.T, evs []sse.Event) []item {
	t.Helper()
	var out []item
	for _, ev := range evs {
		it := entryItem(t, ev.Data)
		if ev.ID != strconv.FormatUint(it.off, 10) {
			t.Fatalf("event id %s for offset %d", ev.ID, it.off)
		}
		out = append(out, it)
	}
	return out
}

func (s *server) ndjsonItems(path string) []item {
	s.t.Helper()
	r := s.want(s.get(path, adminKey, "Accept", "application/x-ndjson"), 200)
	var out []item
	for _, l := range bytes.Split(bytes.TrimSpace(r.body), []byte("\n")) {
		if len(l) > 0 {
			out = append(out, entryItem(s.t, l))
		}
	}
	return out
}

// pageItems reads JSON pages of limit entries from offset from until done
// (or, for a running build, an empty page), each page from the last one's
// next_offset.
func (s *server) pageItems(id string, from uint64, limit int, extra string) []item {
	s.t.Helper()
	var out []item
	for pages := 0; ; pages++ {
		if pages > 10000 {
			s.t.Fatalf("pages from %d: no end", from)
		}
		r := s.want(s.get(fmt.Sprintf("/v1/templates/builds/%s/logs?offset=%d&limit=%d%s", id, from, limit, extra),
			adminKey, "Accept", "application/json"), 200)
		var p struct {
			Entries []json.RawMessage `json:"entries"`
			Next    uint64            `json:"next_offset"`
			Done    bool              `json:"done"`
		}
		if err := json.Unmarshal(r.body, &p); err != nil {
			s.t.Fatalf("page: %s", r.body)
		}
		for _, e := range p.Entries {
			out = append(out, entryItem(s.t, e))
		}
		if p.Done {
			return out
		}
		if p.Next <= from {
			if len(p.Entries) == 0 && !p.Done {
				return out // the end of a running build's log
			}
			s.t.Fatalf("page from %d: next_offset %d does not move on (%d entries)", from, p.Next, len(p.Entries))
		}
		from = p.Next
	}
}

// bItems reads dialect B from offset from (Last-Event-ID from-1) to its
// end; a frame is a notice when its line says so.
func (s *server) bItems(b *capBuild, from uint64) []item {
	s.t.Helper()
	var hdr []string
	if from > 0 {
		hdr = []string{"Last-Event-ID", strconv.FormatUint(from-1, 10)}
	}
	st := s.open("/templates/cap/img/"+b.version+"/build/events", adminKey, hdr...)
	if st.code != 200 {
		s.t.Fatalf("dialect B from %d: %d", from, st.code)
	}
	var out []item
	for _, ev := range st.all(s.t, 30*time.Second) {
		f := decodeB(s.t, ev)
		off, _ := strconv.ParseUint(ev.ID, 10, 64)
		it := item{off: off, msg: f.Line}
		if strings.Contains(f.Line, " omitted: the log is over its ") {
			if f.Level != "warn" {
				s.t.Fatalf("dialect B notice frame at level %q: %s", f.Level, ev.Data)
			}
			it.notice, it.to = true, off
		}
		out = append(out, it)
	}
	// A frame carries no range: a notice stands for what lies between the
	// frame before it and its own id.
	pos := from
	for i := range out {
		if out[i].notice {
			out[i].from = pos
		}
		pos = out[i].off + 1
	}
	return out
}

// cLines polls dialect C from the head of a finished build, limit lines
// a page, until the token is left out. tail, when > 0, starts at the live tail of that many
// lines instead.
func (s *server) cLines(id string, limit int, tail bool) []string {
	s.t.Helper()
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if !tail {
		q.Set("startFromHead", "true")
	}
	var out []string
	for pages := 0; ; pages++ {
		if pages > 10000 {
			s.t.Fatalf("dialect C, limit %d: no end after %d lines", limit, len(out))
		}
		var p struct {
			Logs      []string `json:"logs"`
			NextToken *string  `json:"nextToken"`
		}
		r := s.want(s.get("/v1/builds/"+id+"/logs?"+q.Encode(), adminKey), 200)
		if err := json.Unmarshal(r.body, &p); err != nil {
			s.t.Fatalf("dialect C page: %s", r.body)
		}
		out = append(out, p.Logs...)
		if p.NextToken == nil {
			return out
		}
		if len(p.Logs) == 0 {
			s.t.Fatalf("dialect C, limit %d: an empty page with a token, %d lines into a finished build", limit, len(out))
		}
		q = url.Values{"limit": {strconv.Itoa(limit)}, "nextToken": {*p.NextToken}}
	}
}

// wantC checks dialect C lines read from offset from: the kept messages in
// order, with one notice line in place of the dropped range (when from is
// at or before its end) and the terminal line last.
func (b *capBuild) wantC(t *testing.T, what string, lines []string, from uint64, om buildlog.Omitted) {
	t.Helper()
	var want []string
	for off := from; off < b.next; off++ {
		if off >= om.From && off <= om.To {
			if off == max(from, om.From) {
				want = append(want, "(notice)")
			}
			continue
		}
		want = append(want, b.msgs[off])
	}
	if len(lines) != len(want)+1 {
		t.Fatalf("%s: %d lines, want %d and the terminal one", what, len(lines), len(want))
	}
	for i, w := range want {
		if w == "(notice)" {
			if !strings.Contains(lines[i], " omitted: the log is over its ") {
				t.Fatalf("%s: line %d is %q, want the omission notice", what, i, lines[i])
			}
			continue
		}
		if !strings.HasSuffix(lines[i], " "+w) {
			t.Fatalf("%s: line %d is %q, want it to end with %q", what, i, lines[i], w)
		}
	}
}

// Every dialect, from every start: before the dropped range, at its first
// offset, inside it, at its last, just after and at the end.
func TestCapEveryDialectAndStart(t *testing.T) {
	s := capServer(t)
	b := newCapBuild(s, "tb_capall", "1.0.0")
	b.write(s, 80)
	s.want(s.finish(b.id, "failed"), 200)
	end := b.next + 1 // the terminal entry
	om, kept := omitted(s, b.id)
	if om.From == 0 || om.To+1 >= b.next || om.Entries != om.To-om.From+1 {
		t.Fatalf("omitted %+v of %d entries", om, b.next)
	}
	if kept > capMax+400 {
		t.Fatalf("kept_bytes %d, over the cap %d plus a batch", kept, capMax)
	}
	starts := []uint64{0, 1, om.From - 1, om.From, om.From + 1, (om.From + om.To) / 2, om.To, om.To + 1, om.To + 2, b.next - 1, b.next}
	for _, from := range starts {
		wantNotices := 0
		if from <= om.To {
			wantNotices = 1
		}
		check := func(what string, items []item) {
			t.Helper()
			what = fmt.Sprintf("%s from %d", what, from)
			if n := b.account(t, what, items, from, end, om); n != wantNotices {
				t.Fatalf("%s: %d notices, want %d", what, n, wantNotices)
			}
			if last := items[len(items)-1]; last.off != b.next || last.kind == buildlog.KindMessage {
				t.Fatalf("%s: ends with %+v, not the terminal entry", what, last)
			}
		}
		path := fmt.Sprintf("/v1/templates/builds/%s/logs?offset=%d", b.id, from)
		check("SSE", sseItems(t, s.open(path, adminKey).all(t, 30*time.Second)))
		if from > 0 {
			st := s.open("/v1/templates/builds/"+b.id+"/logs", adminKey, "Last-Event-ID", strconv.FormatUint(from-1, 10))
			check("SSE Last-Event-ID", sseItems(t, st.all(t, 30*time.Second)))
		}
		check("NDJSON", s.ndjsonItems(path))
		for _, limit := range []int{1, 2, 5, 1000} {
			check(fmt.Sprintf("JSON pages of %d", limit), s.pageItems(b.id, from, limit, ""))
		}
		check("dialect B", s.bItems(b, from))

		// A filter that keeps nothing appended still keeps the notice.
		filtered := sseItems(t, s.open(path+"&level=error", adminKey).all(t, 30*time.Second))
		notices := 0
		for _, it := range filtered {
			if it.notice {
				notices++
				if it.from != max(from, om.From) || it.to != om.To {
					t.Fatalf("filtered SSE from %d: notice for [%d, %d], want [%d, %d]", from, it.from, it.to, max(from, om.From), om.To)
				}
			} else if it.off != b.next {
				t.Fatalf("filtered SSE from %d: entry %d at level info passed level=error", from, it.off)
			}
		}
		if notices != wantNotices {
			t.Fatalf("filtered SSE from %d: %d notices, want %d", from, notices, wantNotices)
		}
		filteredPages := s.pageItems(b.id, from, 3, "&level=error")
		if n := len(filteredPages); n != wantNotices+1 {
			t.Fatalf("filtered JSON pages from %d: %d entries, want %d", from, n, wantNotices+1)
		}
	}
	// Dialect C reaches offsets by paging: page edges fall before, on and
	// inside the range as the limit varies.
	for _, limit := range []int{1, 2, 5, 7, 500} {
		b.wantC(t, fmt.Sprintf("dialect C from the head, limit %d", limit), s.cLines(b.id, limit, false), 0, om)
	}
	// The live tail of dialect C starting inside the range.
	tail := int(b.next - (om.From+om.To)/2 + 1)
	b.wantC(t, "dialect C tail", s.cLines(b.id, tail, true), end-uint64(tail), om)
	// A tail of dialect A starting inside the range.
	tailItems := sseItems(t, s.open(fmt.Sprintf("/v1/templates/builds/%s/logs?tail=%d", b.id, tail), adminKey).all(t, 30*time.Second))
	if n := b.account(t, "SSE tail", tailItems, end-uint64(tail), end, om); n != 1 {
		t.Fatalf("SSE tail from inside the range: %d notices", n)
	}
}

// Resumes of every dialect while the range grows: each resume after a
// notice meets a new notice for the new part, never an offset twice.
func TestCapRangeGrowsBetweenResumes(t *testing.T) {
	s := capServer(t)
	b := newCapBuild(s, "tb_capgrow", "1.0.0")
	b.write(s, 40)
	om, _ := omitted(s, b.id)
	// Each reader starts inside the range and reads to the end; then the
	// build goes on and each resumes where it stopped.
	var (
		sseAt, pageAt uint64 = om.From + 2, om.From + 2
		sseAll, pages []item
		cToken        string
		cAll          []string
	)
	// Dialect C cannot start at an offset: it pages from the head. Each
	// read goes on to an empty page (a running build's end) or, once the
	// build is finished, to the page without a token.
	cDone := false
	readC := func(finished bool) {
		q := url.Values{"limit": {"4"}}
		if cToken == "" {
			q.Set("startFromHead", "true")
		} else {
			q.Set("nextToken", cToken)
		}
		for {
			var p struct {
				Logs      []string `json:"logs"`
				NextToken *string  `json:"nextToken"`
			}
			r := s.want(s.get("/v1/builds/"+b.id+"/logs?"+q.Encode(), adminKey), 200)
			if err := json.Unmarshal(r.body, &p); err != nil {
				t.Fatalf("dialect C page: %s", r.body)
			}
			cAll = append(cAll, p.Logs...)
			if p.NextToken == nil {
				if !finished {
					t.Fatalf("dialect C page of a running build without a token: %s", r.body)
				}
				cDone = true
				return
			}
			if len(p.Logs) == 0 {
				if finished {
					t.Fatalf("dialect C: an empty page with a token, %d lines into a finished build", len(cAll))
				}
				cToken = *p.NextToken
				return
			}
			q = url.Values{"limit": {"4"}, "nextToken": {*p.NextToken}}
		}
	}
	grown := 0
	for round := range 5 {
		st := s.open(fmt.Sprintf("/v1/templates/builds/%s/logs?offset=%d", b.id, sseAt), adminKey)
		part := sseItems(t, st.all(t, 30*time.Second))
		if len(part) == 0 || part[0].notice != (sseAt <= om.To) {
			t.Fatalf("round %d: SSE resume at %d (range %d-%d) starts with %+v", round, sseAt, om.From, om.To, part)
		}
		sseAll, sseAt = append(sseAll, part...), part[len(part)-1].off+1
		ps := s.pageItems(b.id, pageAt, 5, "")
		pages = append(pages, ps...)
		if len(ps) > 0 {
			pageAt = ps[len(ps)-1].off + 1
		}
		readC(false)
		before := om
		b.write(s, 15)
		om, _ = omitted(s, b.id)
		if om.From != before.From || om.To <= before.To {
			t.Fatalf("round %d: range %+v did not grow from %+v", round, om, before)
		}
		if sseAt <= om.To {
			grown++
		}
	}
	if grown == 0 {
		t.Fatal("the range never grew past a reader")
	}
	s.want(s.finish(b.id, "ready"), 200)
	end := b.next + 1
	sseAll = append(sseAll, sseItems(t, s.open(fmt.Sprintf("/v1/templates/builds/%s/logs?offset=%d", b.id, sseAt), adminKey).all(t, 30*time.Second))...)
	pages = append(pages, s.pageItems(b.id, pageAt, 5, "")...)
	readC(true)
	if !cDone {
		t.Fatal("dialect C never reached the end")
	}
	final, _ := omitted(s, b.id)
	// The entries each reader got before they were dropped are real: the
	// accounting is against what was appended, with the range as it
	// stands now only for what no read returned.
	for what, items := range map[string][]item{"SSE": sseAll, "JSON pages": pages} {
		pos := om.From + 2
		notices := 0
		for _, it := range items {
			if it.notice {
				notices++
				if it.from != pos {
					t.Fatalf("%s: notice for [%d, %d] where %d was next", what, it.from, it.to, pos)
				}
				pos = it.to + 1
				continue
			}
			if it.off != pos {
				t.Fatalf("%s: entry %d where %d was next", what, it.off, pos)
			}
			if want, ok := b.msgs[it.off]; ok && it.msg != want {
				t.Fatalf("%s: entry %d is %q, want %q", what, it.off, it.msg, want)
			}
			pos++
		}
		if pos != end {
			t.Fatalf("%s: resumes end at %d, want %d", what, pos, end)
		}
		if notices < 2 {
			t.Fatalf("%s: %d notices over resumes into a growing range, want one per part", what, notices)
		}
	}
	// Dialect C has no offsets: count the lines. Every appended entry is
	// either a line or stood for by a notice line, and the notices'
	// counts add up.
	lines, dropped := 0, uint64(0)
	for _, l := range cAll {
		if i := strings.Index(l, " lines ("); i >= 0 && strings.Contains(l, " omitted: the log is over its ") {
			f := strings.Fields(l[:i])
			n, err := strconv.ParseUint(strings.ReplaceAll(f[len(f)-1], ",", ""), 10, 64)
			if err != nil {
				t.Fatalf("dialect C notice %q: %v", l, err)
			}
			dropped += n
			continue
		}
		lines++
	}
	if uint64(lines)+dropped != end {
		t.Fatalf("dialect C: %d lines and %d entries stood for by notices, want %d in all", lines, dropped, end)
	}
	if dropped == 0 || dropped > final.Entries {
		t.Fatalf("dialect C: notices stood for %d entries of the %d dropped", dropped, final.Entries)
	}
}

// A live follower from offset 0 of a build that passes its cap many times
// over is sent every entry as it is appended: each offset exactly once,
// whether it reached the follower as an entry or, after a reconnect, as a
// notice.
func TestCapLiveFollower(t *testing.T) {
	s := capServer(t)
	b := newCapBuild(s, "tb_caplive", "1.0.0")
	st := s.open("/v1/templates/builds/"+b.id+"/logs?follow=true", adminKey)
	b.write(s, 120)
	s.want(s.finish(b.id, "ready"), 200)
	omitted(s, b.id) // fails unless the cap dropped entries
	items := sseItems(t, st.all(t, 30*time.Second))
	b.account(t, "live follower", items, 0, b.next+1, buildlog.Omitted{From: 1, To: 0})
}

// Retries around dropped batches: a retry of a kept batch is answered as
// the first time; of a dropped one, 409 with next_offset, the same answer
// however often it is asked, and the log is unchanged by either.
func TestCapRetries(t *testing.T) {
	s := capServer(t)
	b := newCapBuild(s, "tb_capretry", "1.0.0")
	b.write(s, 60)
	om, kept := omitted(s, b.id)
	before := s.want(s.get("/v1/templates/builds/"+b.id+"/logs", adminKey, "Accept", "application/x-ndjson"), 200).body
	dropped, keptN := 0, 0
	for i, r := range b.replies {
		for try := range 2 {
			got := s.do("POST", "/v1/templates/builds/"+b.id+"/logs", adminKey, r.body)
			if r.first >= om.From && r.first <= om.To {
				if got.code != 409 {
					t.Fatalf("retry %d of dropped batch %d at %d: %s", try, i, r.first, got)
				}
				var e struct {
					Error struct {
						Code       string  `json:"code"`
						NextOffset *uint64 `json:"next_offset"`
					} `json:"error"`
				}
				if err := json.Unmarshal(got.body, &e); err != nil || e.Error.NextOffset == nil || *e.Error.NextOffset != b.next {
					t.Fatalf("retry %d of dropped batch %d: %s, want next_offset %d", try, i, got.body, b.next)
				}
				dropped++
				continue
			}
			if got.code != 200 || !bytes.Equal(bytes.TrimSpace(got.body), bytes.TrimSpace(r.reply)) {
				t.Fatalf("retry %d of kept batch %d at %d: %s, want 200 %s", try, i, r.first, got, r.reply)
			}
			keptN++
		}
	}
	if dropped == 0 || keptN == 0 {
		t.Fatalf("%d retries of dropped batches, %d of kept ones: want both", dropped, keptN)
	}
	after := s.want(s.get("/v1/templates/builds/"+b.id+"/logs", adminKey, "Accept", "application/x-ndjson"), 200).body
	if !bytes.Equal(before, after) {
		t.Fatal("retries changed the log")
	}
	if om2, kept2 := omitted(s, b.id); om2 != om || kept2 != kept {
		t.Fatalf("retries changed the range or kept bytes: %+v %d, was %+v %d", om2, kept2, om, kept)
	}
	// A retry with other entries at a dropped offset is still 409, not
	// stored anywhere.
	other, _ := json.Marshal(map[string]any{"entries": msgs(0, 3), "first_offset": om.From})
	if got := s.do("POST", "/v1/templates/builds/"+b.id+"/logs", adminKey, other); got.code != 409 {
		t.Fatalf("a different batch at dropped offset %d: %s", om.From, got)
	}
	// The producer goes on at next_offset.
	b.write(s, 1)
}
