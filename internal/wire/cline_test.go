package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"buildlog"
)

// slowCLine is the decoding path AppendCLine must agree with.
func slowCLine(t testing.TB, line []byte) []byte {
	var e cEntry
	if err := json.Unmarshal(line, &e); err != nil {
		t.Fatalf("stored line does not decode: %v: %s", err, line)
	}
	return AppendString(nil, e.text())
}

// storedLines runs entries through the real ingest path (decode, validate,
// encode) and returns the stored lines, or nil when they are refused.
func storedLines(entries []map[string]any) ([][]byte, error) {
	body, err := json.Marshal(entries)
	if err != nil {
		return nil, err
	}
	es, _, err := DecodeBatch(body, false, buildlog.Limits{})
	if err != nil {
		return nil, err
	}
	for i := range es {
		if es[i].Timestamp == "" {
			es[i].Timestamp = "2026-03-17T10:11:12.345678Z" // as the server fills it
		}
	}
	data := EncodeBatch(NewBatch(es, nil, nil), "b_1", "tmpl_1", 41)
	return bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")), nil
}

func checkCLine(t testing.TB, line []byte) {
	fast, ok := appendCLineFast(nil, line)
	if !ok {
		t.Fatalf("a canonical line took the slow path: %s", line)
	}
	if want := slowCLine(t, line); !bytes.Equal(fast, want) {
		t.Fatalf("line %s\n fast %s\n want %s", line, fast, want)
	}
	var s string
	if err := json.Unmarshal(fast, &s); err != nil {
		t.Fatalf("not a JSON string: %s", fast)
	}
}

func TestCLineMatchesDecoding(t *testing.T) {
	src := func(s string) map[string]any { return map[string]any{"message": "m", "source": s} }
	cases := []map[string]any{
		{"message": "plain"},
		{"message": ""},
		{"message": `quote " backslash \ newline` + "\n tab\t cr\r bell\x07 nul\x00"},
		{"message": "é ünïcödé 日本語 🚀 \u2028 \u2029 <script>&amp;"},
		{"message": "bad utf8 \xff\xfe end"},
		{"message": "phase", "phase": "install", "source": "npm"},
		{"message": "phase only", "phase": "install"},
		src(""), src("a\"b\\c"), src("日本"), src("x\ny"),
		{"message": "ts", "timestamp": "2026-03-17T00:00:12Z"},
		{"message": "ts", "timestamp": "2026-03-17T00:00:12.123456789Z"},
		{"message": "ts", "timestamp": "2026-03-17T23:59:59.9+02:00"},
		{"message": "ts", "timestamp": "2026-03-17T00:30:00-05:30"},
		{"message": "ts", "timestamp": "0001-01-01T00:00:00Z"},
		{"message": "all", "phase": "build", "source": "docker", "level": "warn", "kind": "cache",
			"step_index": 1, "total_steps": 3, "cache_kind": "layer", "cache_status": "hit", "cache_reason": "force_upload",
			"cache_subject": "s", "error_detail": map[string]any{"a": "\"}"}},
	}
	for _, c := range cases {
		lines, err := storedLines([]map[string]any{c})
		if err != nil {
			t.Fatalf("refused at ingest: %v: %v", c, err)
		}
		checkCLine(t, lines[0])
	}
	// Not canonical: decoded, not copied.
	for _, line := range []string{
		`{"message":"x","timestamp":"2026-03-17T00:00:12Z"}`,
		`{"build_id":"b","template_id":"t","offset":1,"timestamp":"2026-03-17T00:00:12Z","message":"x"}`,
	} {
		if _, ok := appendCLineFast(nil, []byte(line)); ok {
			t.Errorf("fast path took a line that is not canonical: %s", line)
		}
		got, err := AppendCLine(nil, []byte(line))
		if err != nil || !bytes.Equal(got, slowCLine(t, []byte(line))) {
			t.Errorf("%s: %s, %v", line, got, err)
		}
	}
	if _, err := AppendCLine(nil, []byte(`{"build_id":"b"`)); err == nil {
		t.Error("a broken line gave no error")
	}
}

// FuzzCLine: for any entry ingest accepts, the copying path and the
// decoding path give the same line; no input panics.
func FuzzCLine(f *testing.F) {
	f.Add("hello", "npm", true, "2026-03-17T00:00:12.5Z", "install")
	f.Add("a\"b\\c\n\x01\xff", "", true, "", "")
	f.Add("日本 🚀", "x\ty", false, "2026-03-17T23:59:59+02:00", "")
	f.Fuzz(func(t *testing.T, msg, source string, hasSource bool, ts, phase string) {
		e := map[string]any{"message": msg}
		if hasSource {
			e["source"] = source
		}
		if ts != "" {
			e["timestamp"] = ts
		}
		if phase != "" {
			e["phase"] = phase
		}
		lines, _ := storedLines([]map[string]any{e})
		for _, line := range lines {
			checkCLine(t, line)
		}
		// Arbitrary bytes: an answer or an error, never a panic.
		AppendCLine(nil, []byte(msg))
	})
}

// BenchmarkPollLineDecoded is the decoding path AppendCLine falls back to
// (and that all lines took before it): decode, format, encode. Compare
// with BenchmarkPollLine (internal/httpapi), the same lines.
func BenchmarkPollLineDecoded(b *testing.B) {
	levels := []string{"info", "info", "debug", "warn"}
	entries := make([]map[string]any, 1000)
	for i := range entries {
		entries[i] = map[string]any{"timestamp": fmt.Sprintf("2026-03-17T00:00:%02d.%06dZ", i%60, i), "level": levels[i%len(levels)],
			"phase": "install", "source": "npm", "message": fmt.Sprintf("added %d packages, and audited 1433 packages in 31s", i)}
	}
	lines, err := storedLines(entries)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		line := lines[i%len(lines)]
		var e cEntry
		if err := json.Unmarshal(line, &e); err != nil {
			b.Fatal(err)
		}
		_ = appendString(nil, e.text())
	}
}
