package wire

import (
	"encoding/json"
	"strings"
	"testing"

	"buildlog"
)

func ptr[T any](v T) *T { return &v }

// scanCanonical must agree with a real JSON decode on every line the canonical
// encoder can write, including strings and nested objects crafted to look
// like the fields it looks for.
func TestScanLineAgreesWithDecode(t *testing.T) {
	tricky := []string{
		``, `plain`, `,"kind":"end"`, `","phase":"boot`, `\`, `\\`, `\"`, `a\\","phase":"x`,
		"tab\there\nnewline", "ünïcödé \u2028", `{"phase":"x"}`, strings.Repeat(`\"`, 50),
	}
	var entries []buildlog.Entry
	for i, m := range tricky {
		for _, phase := range []string{"", "boot"} {
			e := buildlog.Entry{
				BuildID: "b_" + `1`, TemplateID: "t", Offset: uint64(i),
				Timestamp: "2026-03-17T00:00:12Z", Kind: buildlog.Kinds[i%len(buildlog.Kinds)],
				Level: buildlog.Levels[i%len(buildlog.Levels)], Message: m, Phase: phase,
				Source: ptr(`","phase":"src`), CacheSubject: ptr(`,"level":"error"`),
				ErrorDetail:    json.RawMessage(`{"phase":"nested","kind":"end","level":"error"}`),
				ResultMetadata: json.RawMessage(`{"x":{"phase":"deeper"}}`),
			}
			entries = append(entries, e)
		}
	}
	for _, e := range entries {
		line := AppendEntry(nil, &e)
		kind, level, phase, ok := scanCanonical(line)
		if !ok {
			t.Fatalf("canonical line not scanned: %s", line)
		}
		var want struct{ Kind, Level, Phase string }
		if err := json.Unmarshal(line, &want); err != nil {
			t.Fatal(err)
		}
		if string(kind) != want.Kind || string(level) != want.Level || string(phase) != want.Phase {
			t.Fatalf("scan (%s,%s,%s), decode (%s,%s,%s) for %s", kind, level, phase, want.Kind, want.Level, want.Phase, line)
		}
	}
	// Anything else is left to the decoder.
	for _, bad := range []string{``, `{}`, `{"kind":"end"}`, `{"a":1,"kind":"x","level":"info"}`, `{"a":1,"kind":"x","level":"info","message":"unterminated`} {
		if _, _, _, ok := scanCanonical([]byte(bad)); ok {
			t.Errorf("scanned a non-canonical line: %s", bad)
		}
	}
}
