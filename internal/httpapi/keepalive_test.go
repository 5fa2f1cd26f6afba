package httpapi_test

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/httpapi"
)

// keepaliveForms are the streaming forms of dialect A and their keepalives.
var keepaliveForms = []struct{ name, accept, keepalive string }{
	{"sse", "text/event-stream", ": keepalive\n"},
	{"ndjson", "application/x-ndjson", "\n"},
}

// lineReader reads a stream line by line; any line that is neither a
// keepalive nor part of the SSE preamble is an entry.
type lineReader struct {
	t         *testing.T
	br        *bufio.Reader
	keepalive string
}

// next returns the next entry's message, counting the keepalives before it.
func (lr *lineReader) next() (msg string, keepalives int) {
	lr.t.Helper()
	for {
		line, err := lr.br.ReadString('\n')
		if err != nil {
			lr.t.Fatalf("after %d keepalives: %v", keepalives, err)
		}
		switch {
		case line == lr.keepalive:
			keepalives++
			if keepalives == 2 {
				return "", keepalives // enough to know they come
			}
			continue
		case line == "\n", strings.HasPrefix(line, "retry: "), strings.HasPrefix(line, "id: "), strings.HasPrefix(line, "event: "):
			continue
		}
		var e buildlog.Entry
		if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSuffix(line, "\n"), "data: ")), &e); err != nil {
			lr.t.Fatalf("unexpected line %q", line)
		}
		return e.Message, keepalives
	}
}

// A filtered follower of a busy build whose entries the filter drops
// writes nothing for as long as the build runs, so it must send keepalives
// as an idle one does: a proxy cuts a silent stream however busy the build
// behind it is, and client.Stream's stall timer gives up on it.
func TestFilteredFollowOfBusyBuildSendsKeepalives(t *testing.T) {
	// Commits come every few milliseconds, far more often than keepalives
	// are due: a timer reset by every commit never fires.
	s := newServer(t, func(c *httpapi.Config) { c.Keepalive = 200 * time.Millisecond })
	for _, f := range keepaliveForms {
		t.Run(f.name, func(t *testing.T) {
			id := s.newBuild(nil)
			st := s.open("/v1/templates/builds/"+id+"/logs?follow=true&level=error", adminKey, "Accept", f.accept)
			if st.code != 200 {
				t.Fatalf("status %d", st.code)
			}
			stop, done := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(done)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					s.append(id, msgs(i, 1)) // level info
				}
			}()
			defer func() { close(stop); <-done }()
			deadline := time.AfterFunc(10*time.Second, st.stop)
			defer deadline.Stop()
			lr := &lineReader{t: t, br: bufio.NewReader(st.resp.Body), keepalive: f.keepalive}
			if msg, n := lr.next(); n < 2 {
				t.Fatalf("got entry %q through level=error", msg)
			}
		})
	}
}

// bigInfo appends n info entries of about 1 KB each: a few MiB make a log
// several store pages long.
func bigInfo(s *server, id string, n int) {
	s.t.Helper()
	es := make([]map[string]any, 0, 500)
	for i := range n {
		es = append(es, map[string]any{"message": strings.Repeat("i", 1000)})
		if len(es) == cap(es) || i == n-1 {
			s.append(id, es)
			es = es[:0]
		}
	}
}

// A follower that starts far behind catches up page by page without
// waiting; if the filter drops all of it, keepalives must still come
// while it reads, not only once it has caught up.
func TestFilteredCatchUpSendsKeepalives(t *testing.T) {
	keepaliveBeforeFilteredEntry(t, "follow=true&level=error")
}

// The same holds for a replay without follow, which reads the whole log
// up to its end before it ends.
func TestFilteredReplaySendsKeepalives(t *testing.T) {
	keepaliveBeforeFilteredEntry(t, "level=error")
}

// keepaliveBeforeFilteredEntry reads, with query, a log of 4 MB the filter
// drops and then one entry it keeps, in each stream form, and wants a
// keepalive before that entry.
func keepaliveBeforeFilteredEntry(t *testing.T, query string) {
	// Keepalive 1ns: due after every page that writes nothing.
	s := newServer(t, func(c *httpapi.Config) { c.Keepalive = time.Nanosecond })
	id := s.newBuild(nil)
	bigInfo(s, id, 4000)
	s.append(id, []map[string]any{{"message": "boom", "level": "error"}})
	for _, f := range keepaliveForms {
		t.Run(f.name, func(t *testing.T) {
			st := s.open("/v1/templates/builds/"+id+"/logs?"+query, adminKey, "Accept", f.accept)
			deadline := time.AfterFunc(10*time.Second, st.stop)
			defer deadline.Stop()
			lr := &lineReader{t: t, br: bufio.NewReader(st.resp.Body), keepalive: f.keepalive}
			msg, n := lr.next()
			if n == 0 {
				t.Fatalf("entry %q came after 4 MB of filtered log with no keepalive before it", msg)
			}
		})
	}
}
