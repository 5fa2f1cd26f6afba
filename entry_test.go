package buildlog_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"buildlog"
	"buildlog/internal/wire"
)

func TestChunkFrom(t *testing.T) {
	es := make([]buildlog.Entry, 5)
	for i := range es {
		es[i] = buildlog.Entry{Timestamp: "t", Kind: "message", Level: "info", Message: strings.Repeat("m", i)}
	}
	b := wire.NewBatch(es, nil, nil)
	c := buildlog.Chunk{First: 10, Count: 5, Data: wire.EncodeBatch(b, "b", "t", 10)}
	for from := uint64(10); from <= 15; from++ {
		sub := c.From(from)
		var offs []uint64
		sub.Lines(func(off uint64, line []byte) bool {
			var e buildlog.Entry
			if err := json.Unmarshal(line, &e); err != nil {
				t.Fatal(err)
			}
			if e.Offset != off {
				t.Fatalf("line at %d carries offset %d", off, e.Offset)
			}
			offs = append(offs, off)
			return true
		})
		if len(offs) != int(15-from) || sub.Count != len(offs) || (len(offs) > 0 && offs[0] != from) {
			t.Fatalf("From(%d): offsets %v count %d", from, offs, sub.Count)
		}
	}
}

func TestValidVersion(t *testing.T) {
	for _, v := range []string{"1.0.0", "0.0.1-alpha.1+build.5", "10.20.30"} {
		if !buildlog.ValidVersion(v) {
			t.Errorf("version %q rejected", v)
		}
	}
	for _, v := range []string{"v1.0.0", "1.0", "01.0.0"} {
		if buildlog.ValidVersion(v) {
			t.Errorf("version %q accepted", v)
		}
	}
}

// ValidPhase is PhaseRule, which error messages quote, without a regexp.
func TestValidPhaseIsPhaseRule(t *testing.T) {
	re := regexp.MustCompile(buildlog.PhaseRule)
	cases := []string{"", "a", "install", "a-b_c9", "9a", "Install", "a b", "é", "a.", "-a", "_a",
		"a" + strings.Repeat("b", 63), "a" + strings.Repeat("b", 64), "a\n"}
	for c := range 256 {
		cases = append(cases, string(rune(c)), "a"+string(rune(c)))
	}
	for _, s := range cases {
		if got, want := buildlog.ValidPhase(s), re.MatchString(s); got != want {
			t.Errorf("ValidPhase(%q) = %v, the rule says %v", s, got, want)
		}
	}
}
