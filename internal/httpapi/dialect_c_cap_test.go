package httpapi_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"buildlog"
	"buildlog/internal/httpapi"
	"buildlog/internal/sqlite"
)

// Dialect C through a log the size cap has cut: the omission notice is a
// line like any other, every page is valid JSON, and the nextToken loop
// gets past the dropped range whatever the page size, reading each line
// once and stopping after the terminal one. (Pages once stopped limit
// offsets after their start, so a token inside the range with a small
// limit named the same position for ever, and a page starting inside it
// began with a stray comma.)
func TestSeedCThroughOmittedRange(t *testing.T) {
	s := newServer(t, func(c *httpapi.Config) {
		c.Store.(*sqlite.Store).SetLogCap(buildlog.LogCap{MaxBytes: 4 << 10, HeadBytes: 1 << 10}, nil)
	})
	id := s.newBuild(nil)
	pad := strings.Repeat("y", 60)
	for b := range 8 {
		batch := make([]map[string]any, 10)
		for i := range batch {
			batch[i] = map[string]any{"message": fmt.Sprintf("line %d %s", 10*b+i, pad)}
		}
		s.append(id, batch)
	}
	s.want(s.finish(id, "ready"), 200)
	om, ok := s.build(id)["omitted"].(map[string]any)
	if !ok {
		t.Fatalf("nothing omitted; the test needs a cut log: %v", s.build(id))
	}
	kept := 80 - int(om["entries"].(float64)) // and the notice, and the terminal line
	for _, limit := range []int{1, 3, 12, 100} {
		var lines []string
		q := fmt.Sprintf("?startFromHead=true&limit=%d", limit)
		for pages := 0; ; pages++ {
			if pages > 200 {
				t.Fatalf("limit %d: still paging after 200 pages; read %d lines", limit, len(lines))
			}
			p := s.poll(id, q)
			lines = append(lines, p.Logs...)
			if !p.hasToken {
				break
			}
			q = fmt.Sprintf("?limit=%d&nextToken=%s", limit, url.QueryEscape(p.NextToken))
		}
		notices := 0
		for _, l := range lines {
			if strings.Contains(l, "omitted: the log is over its") {
				notices++
			}
		}
		if notices != 1 || len(lines) != kept+2 || !strings.HasSuffix(lines[len(lines)-1], "Build ready") {
			t.Errorf("limit %d: %d lines, %d notices, last %q; want %d lines, one notice, Build ready last",
				limit, len(lines), notices, lines[len(lines)-1], kept+2)
		}
	}
}
