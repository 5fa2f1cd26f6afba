package wire_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"buildlog"
	"buildlog/internal/wire"
)

func TestDecodeBatchRejects(t *testing.T) {
	long := strings.Repeat("x", 70)
	cases := []struct {
		name, body, code, want string
	}{
		{"empty body", ``, buildlog.EInvalid, "body: empty"},
		{"not json", `nope`, buildlog.EInvalid, "body:"},
		{"empty batch", `[]`, buildlog.EInvalid, "at least one entry"},
		{"not an object", `[1]`, buildlog.EInvalid, "entries[0]: want a JSON object"},
		{"missing message", `[{"message":"a"},{"level":"info"}]`, buildlog.EInvalid, "entries[1].message: required"},
		{"message type", `[{"message":3}]`, buildlog.EInvalid, "entries[0].message: want a string"},
		{"unknown field", `[{"message":"a","colour":"red"}]`, buildlog.EInvalid, "entries[0].colour: unknown field"},
		{"bad level", `[{"message":"a"},{"message":"a"},{"message":"a"},{"message":"a","level":"fatal"}]`, buildlog.EInvalid, "entries[3].level: want one of debug, info, warn, error"},
		{"bad kind", `[{"message":"a","kind":"note"}]`, buildlog.EInvalid, "entries[0].kind: want one of"},
		{"end kind", `[{"message":"a","kind":"end"}]`, buildlog.EInvalid, "entries[0].kind: end is written only by finish"},
		{"cancelled kind", `[{"message":"a","kind":"cancelled"}]`, buildlog.EInvalid, "entries[0].kind: cancelled is written only by finish"},
		{"bad timestamp", `[{"message":"a","timestamp":"yesterday"}]`, buildlog.EInvalid, "entries[0].timestamp: want an RFC 3339"},
		{"bad phase", `[{"message":"a","phase":"Snapshot"}]`, buildlog.EInvalid, "entries[0].phase:"},
		{"empty phase", `[{"message":"a","phase":""}]`, buildlog.EInvalid, "entries[0].phase:"},
		{"long source", `[{"message":"a","source":"` + long + `"}]`, buildlog.EInvalid, "entries[0].source: 70 bytes"},
		{"step zero", `[{"message":"a","step_index":0}]`, buildlog.EInvalid, "entries[0].step_index: want an integer ≥ 1"},
		{"step over total", `[{"message":"a","step_index":4,"total_steps":3}]`, buildlog.EInvalid, "entries[0].step_index: 4 is greater than total_steps 3"},
		{"total zero", `[{"message":"a","total_steps":0}]`, buildlog.EInvalid, "entries[0].total_steps"},
		{"step fraction", `[{"message":"a","step_index":1.5}]`, buildlog.EInvalid, "entries[0].step_index: want an integer"},
		{"attempt over max", `[{"message":"a","attempt":3,"max_attempts":2}]`, buildlog.EInvalid, "entries[0].attempt: 3 is greater than max_attempts 2"},
		{"attempt zero", `[{"message":"a","attempt":0}]`, buildlog.EInvalid, "entries[0].attempt"},
		{"cache kind", `[{"message":"a","cache_kind":"disk"}]`, buildlog.EInvalid, "entries[0].cache_kind: want one of file_blob, layer, final_artifact"},
		{"cache status", `[{"message":"a","cache_status":"warm"}]`, buildlog.EInvalid, "entries[0].cache_status: want one of hit, miss, stored, bypass"},
		{"cache reason", `[{"message":"a","cache_reason":"why"}]`, buildlog.EInvalid, "entries[0].cache_reason: want one of"},
		{"error_detail array", `[{"message":"a","error_detail":[1]}]`, buildlog.EInvalid, "entries[0].error_detail: want a JSON object"},
		{"result string", `[{"message":"a","result":"ok"}]`, buildlog.EInvalid, "entries[0].result: want a JSON object"},
		{"object no entries", `{"first_offset":0}`, buildlog.EInvalid, "entries: required"},
		{"object unknown", `{"entries":[{"message":"a"}],"offset":1}`, buildlog.EInvalid, "body.offset: unknown field"},
		{"negative first", `{"entries":[{"message":"a"}],"first_offset":-1}`, buildlog.EInvalid, "first_offset"},
		{"trailing data", `[{"message":"a"}] x`, buildlog.EInvalid, "body:"},
		{"too many", `[` + strings.Repeat(`{"message":"a"},`, 4) + `{"message":"a"}]`, buildlog.ETooLarge, "5 entries in one batch, the limit is 4"},
		{"message too long", `[{"message":"` + strings.Repeat("m", 101) + `"}]`, buildlog.EInvalid, "entries[0].message: 101 bytes, the limit is 100"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := wire.DecodeBatch([]byte(c.body), false, buildlog.Limits{MaxBatch: 4, MaxMessage: 100})
			if err == nil {
				t.Fatalf("accepted %s", c.body)
			}
			if got := buildlog.ErrorCode(err); got != c.code {
				t.Errorf("code %q, want %q (%v)", got, c.code, err)
			}
			if got := buildlog.ErrorMessage(err); !strings.Contains(got, c.want) {
				t.Errorf("message %q, want it to contain %q", got, c.want)
			}
		})
	}
}

func TestDecodeNDJSON(t *testing.T) {
	body := "{\"message\":\"a\"}\n\n{\"message\":\"b\",\"level\":\"warn\"}\r\n{\"message\":\"c\"}"
	es, first, err := wire.DecodeBatch([]byte(body), true, buildlog.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if first != nil || len(es) != 3 || es[1].Level != buildlog.LevelWarn || es[2].Message != "c" {
		t.Fatalf("got %+v first=%v", es, first)
	}
	_, _, err = wire.DecodeBatch([]byte("{\"message\":\"a\"}\n{\"level\":\"nope\",\"message\":\"x\"}\n"), true, buildlog.Limits{})
	if got := buildlog.ErrorMessage(err); !strings.Contains(got, "entries[1].level") {
		t.Fatalf("ndjson error %q does not name entries[1].level", got)
	}
}

// Absent fields stay absent; present ones keep their values and order.
func TestCanonicalEncoding(t *testing.T) {
	body := `{"entries":[
		{"message":"plain"},
		{"message":"Snapshot complete","timestamp":"2026-03-17T00:00:12+02:00","kind":"cache","level":"warn",
		 "phase":"snapshot","source":"","step_index":3,"total_steps":5,"attempt":1,"max_attempts":3,
		 "cache_kind":"layer","cache_status":"hit","cache_reason":"missing_or_incompatible","cache_subject":"RUN npm ci",
		 "error_detail":{ "a" : [1, 2] },"result":{},"result_metadata":{"k":"v"},
		 "build_id":"ignored","template_id":"ignored","offset":99}
	],"first_offset":7}`
	es, first, err := wire.DecodeBatch([]byte(body), false, buildlog.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if first == nil || *first != 7 {
		t.Fatalf("first_offset %v, want 7", first)
	}
	es[0].Timestamp = "2026-01-01T00:00:00Z"
	for i := range es {
		es[i].BuildID, es[i].TemplateID, es[i].Offset = "tb_1", "tmpl_1", uint64(10+i)
	}
	got0 := string(wire.AppendEntry(nil, &es[0]))
	want0 := `{"build_id":"tb_1","template_id":"tmpl_1","offset":10,"timestamp":"2026-01-01T00:00:00Z","kind":"message","level":"info","message":"plain"}`
	if got0 != want0 {
		t.Errorf("minimal entry\n got %s\nwant %s", got0, want0)
	}
	got1 := string(wire.AppendEntry(nil, &es[1]))
	want1 := `{"build_id":"tb_1","template_id":"tmpl_1","offset":11,"timestamp":"2026-03-17T00:00:12+02:00","kind":"cache","level":"warn","message":"Snapshot complete","phase":"snapshot","source":"","step_index":3,"total_steps":5,"attempt":1,"max_attempts":3,"cache_kind":"layer","cache_status":"hit","cache_reason":"missing_or_incompatible","cache_subject":"RUN npm ci","error_detail":{"a":[1,2]},"result":{},"result_metadata":{"k":"v"}}`
	if got1 != want1 {
		t.Errorf("full entry\n got %s\nwant %s", got1, want1)
	}
	// The canonical bytes decode back into the same entry.
	var back buildlog.Entry
	if err := json.Unmarshal([]byte(got1), &back); err != nil {
		t.Fatal(err)
	}
	if again := string(wire.AppendEntry(nil, &back)); again != got1 {
		t.Errorf("round trip changed the entry:\n%s\n%s", again, got1)
	}
}

func TestEncodingEscapes(t *testing.T) {
	msg := "line1\nline2\r\t\"q\" \\ <b>&</b> \x01 \u2028 \xff é"
	e := buildlog.Entry{Timestamp: "2026-01-01T00:00:00Z", Kind: "message", Level: "info", Message: msg}
	line := wire.AppendEntry(nil, &e)
	if strings.ContainsAny(string(line), "\n\r") {
		t.Fatalf("entry spans lines: %q", line)
	}
	var back buildlog.Entry
	if err := json.Unmarshal(line, &back); err != nil {
		t.Fatalf("not JSON: %v: %s", err, line)
	}
	want := strings.ToValidUTF8(msg, "\ufffd")
	if back.Message != want {
		t.Fatalf("message %q, want %q", back.Message, want)
	}
}

// TestStringEscapesAtEveryPosition: appendString skips plain ASCII a
// word at a time, so each character it must treat is tried at every
// position of the words around it, and the stored spelling (which
// fingerprints and stored lines depend on) must be exactly the same.
func TestStringEscapesAtEveryPosition(t *testing.T) {
	for c, esc := range map[string]string{
		`"`: `\"`, `\`: `\\`, "\n": `\n`, "\r": `\r`, "\t": `\t`, "\x01": `\u0001`, "\x1f": `\u001f`,
		"\x7f": "\x7f", " ": " ", "~": "~", "é": "é", "\xff": `\ufffd`, "\u2028": `\u2028`, "\u2029": `\u2029`, "🚀": "🚀",
	} {
		for k := range 18 {
			s := strings.Repeat("a", k) + c + strings.Repeat("b", 17-k)
			want := `"` + strings.Repeat("a", k) + esc + strings.Repeat("b", 17-k) + `"`
			if got := string(wire.AppendString(nil, s)); got != want {
				t.Errorf("AppendString(%q) = %s, want %s", s, got, want)
			}
		}
	}
}

func TestNewBuildValidation(t *testing.T) {
	bad := map[string]string{
		`{"build_id":"-x"}`:                         "build_id",
		`{"name":"a","version":"v1.0.0"}`:           "version",
		`{"name":"a","version":"1.0"}`:              "version",
		`{"name":"a"}`:                              "name, version",
		`{"namespace":"n"}`:                         "name, version",
		`{"total_steps":0}`:                         "total_steps",
		`{"metadata":[1]}`:                          "metadata",
		`{"nope":1}`:                                "body.nope: unknown field",
		`{"secrets":[""]}`:                          "secrets[0]",
		`{"name":"a","version":"1.0.0","team":"@"}`: "team",
	}
	for body, want := range bad {
		_, err := wire.DecodeNewBuild([]byte(body))
		if buildlog.ErrorCode(err) != buildlog.EInvalid || !strings.Contains(buildlog.ErrorMessage(err), want) {
			t.Errorf("%s: got %v, want invalid naming %q", body, err, want)
		}
	}
}

// EncodeBatch sizes a chunk exactly for valid ids: a chunk is kept in memory
// for live readers, and slack there is memory the hub accounts for.
func TestEncodeBatchSizedExactly(t *testing.T) {
	es := make([]buildlog.Entry, 10)
	for i := range es {
		es[i] = buildlog.Entry{Timestamp: "2026-03-17T00:00:12.123456Z", Kind: "message", Level: "info", Message: strings.Repeat("m", 40*i)}
	}
	b := wire.NewBatch(es, nil, nil)
	data := wire.EncodeBatch(b, "0f8fad5b-d9cb-469f-a165-70867728950e", "tmpl_1", 1000) // offsets 1000..1009: one width
	if len(data) != cap(data) {
		t.Fatalf("chunk of %d bytes in a buffer of %d", len(data), cap(data))
	}
	if n := bytes.Count(data, []byte("\n")); n != len(es) {
		t.Fatalf("%d lines, want %d", n, len(es))
	}
}
