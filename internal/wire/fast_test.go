package wire

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"buildlog"
)

// fastCases are bodies the fast path must take, and bodies it must leave to
// the general path; either way DecodeBatch must answer as the general path.
var fastCases = []struct {
	body   string
	ndjson bool
	fast   bool // the fast path decides it
}{
	{`[{"message":"a"}]`, false, true},
	{` [ {"message" : "a" , "level":"warn"} , {"message":""} ] `, false, true},
	{`[{"timestamp":"2026-03-17T00:00:12.5+02:00","kind":"cache","level":"debug","message":"Snapshot complete","phase":"snapshot","source":"builder","step_index":3,"total_steps":5,"attempt":1,"max_attempts":3,"cache_kind":"layer","cache_status":"hit","cache_reason":"missing_or_incompatible","cache_subject":"RUN npm ci","error_detail":{ "a" : [1, {"b":null}] },"result":{},"result_metadata":null}]`, false, true},
	{`[{"message":"tab\there \"q\" \\ \/ \u001b[31mred\u001b[0m é \u00e9 \u4e16","source":null}]`, false, true},
	{`[{"message":"x","build_id":"ignored","template_id":7,"offset":{"a":1}}]`, false, true},
	{`{"entries":[{"message":"a"}],"first_offset":12}`, false, true},
	{`{"first_offset":0,"entries":[{"message":"a"},{"message":"b"}]}`, false, true},
	{"{\"message\":\"a\"}\n\n  {\"message\":\"b\",\"level\":\"error\"}\r\n", true, true},
	{`[{"message":"a","step_index":-0,"total_steps":1}]`, false, false}, // -0 is 0: invalid step, left to the general path
	// Left to the general path:
	{`[{"Message":"a"}]`, false, false},                         // case-insensitive key
	{`[{"message":"a","message":"b"}]`, false, false},           // duplicate key
	{`[{"message":"\ud83d\ude00"}]`, false, false},              // surrogate pair
	{"[{\"message\":\"\xff\"}]", false, false},                  // invalid UTF-8
	{`[{"message":"a","step_index":1.0}]`, false, false},        // fraction
	{`[{"message":"a","step_index":01}]`, false, false},         // leading zero
	{`[{"message":"a","nope":1}]`, false, false},                // unknown field
	{`[{"message":"a"}] x`, false, false},                       // trailing data
	{`[{"message":"a"},]`, false, false},                        // trailing comma
	{`[]`, false, false},                                        // empty
	{`[{"level":"info"}]`, false, false},                        // message missing
	{`[{"message":"a","level":"loud"}]`, false, false},          // bad level
	{`[{"message":"a","kind":"end"}]`, false, false},            // finish-only kind
	{`[{"message":"a","phase":"Build"}]`, false, false},         // bad phase
	{`[{"message":"a","timestamp":"yesterday"}]`, false, false}, // bad time
	{`[{"message":"a","result":[1]}]`, false, false},            // result not an object
	{`[{"message":"a","error_detail":{"a":}}]`, false, false},   // broken nested JSON
	{`{"entries":[{"message":"a"}],"first_offset":-1}`, false, false},
	{`{"entries":null}`, false, false},
	{`{"first_offset":1}`, false, false},
	{"\v[{\"message\":\"a\"}]", false, false}, // not JSON whitespace
	{"{\"message\":\"a\"} x\n", true, false},
	{"[{\"message\":\"a\tb\"}]", false, false}, // raw control character
}

func TestDecodeFastAgreesWithGeneral(t *testing.T) {
	for _, c := range fastCases {
		lim := buildlog.Limits{}.WithDefaults()
		fe, ff, ok := decodeFast([]byte(c.body), c.ndjson, lim)
		if ok != c.fast {
			t.Errorf("%q: fast path took it: %v, want %v", c.body, ok, c.fast)
		}
		ge, gf, gerr := decodeGeneral([]byte(c.body), c.ndjson, lim)
		if ok {
			if gerr != nil {
				t.Errorf("%q: fast path accepted what the general path refuses: %v", c.body, gerr)
				continue
			}
			if !reflect.DeepEqual(fe, ge) || !reflect.DeepEqual(ff, gf) {
				t.Errorf("%q: fast path decoded\n%+v %v\ngeneral path\n%+v %v", c.body, fe, ff, ge, gf)
			}
		}
		// And DecodeBatch answers as the general path, error text included.
		de, df, derr := DecodeBatch([]byte(c.body), c.ndjson, buildlog.Limits{})
		if (derr == nil) != (gerr == nil) || (derr != nil && derr.Error() != gerr.Error()) {
			t.Errorf("%q: DecodeBatch error %v, general path %v", c.body, derr, gerr)
		}
		if !reflect.DeepEqual(de, ge) || !reflect.DeepEqual(df, gf) {
			t.Errorf("%q: DecodeBatch and the general path differ", c.body)
		}
	}
}

func TestDecodeFastBatchLimit(t *testing.T) {
	body := "[" + strings.Repeat(`{"message":"a"},`, 10) + `{"message":"a"}]`
	lim := buildlog.Limits{MaxBatch: 10}.WithDefaults()
	if _, _, ok := decodeFast([]byte(body), false, lim); ok {
		t.Fatal("fast path took a batch over the limit")
	}
	if _, _, err := DecodeBatch([]byte(body), false, buildlog.Limits{MaxBatch: 10}); err == nil || err.(*buildlog.Error).Code != buildlog.ETooLarge {
		t.Fatalf("got %v, want too_large", err)
	}
}

// FuzzDecodeFast checks that whatever the fast path accepts, the general
// path accepts too and decodes to the same entries.
//
//	go test -run '^$' -fuzz FuzzDecodeFast .
func FuzzDecodeFast(f *testing.F) {
	for _, c := range fastCases {
		f.Add([]byte(c.body), c.ndjson)
	}
	f.Fuzz(func(t *testing.T, body []byte, ndjson bool) {
		lim := buildlog.Limits{}.WithDefaults()
		fe, ff, ok := decodeFast(body, ndjson, lim)
		if !ok {
			return
		}
		ge, gf, err := decodeGeneral(body, ndjson, lim)
		if err != nil {
			t.Fatalf("fast path accepted what the general path refuses: %v", err)
		}
		if !reflect.DeepEqual(fe, ge) || !reflect.DeepEqual(ff, gf) {
			t.Fatalf("fast path decoded\n%+v %v\ngeneral path\n%+v %v", fe, ff, ge, gf)
		}
	})
}

// TestEntryCount: the guess that sizes a batch's slice is never short for
// what producers send (nested objects and braces inside strings only make
// it high), and a body of braces cannot make it large: it stays within
// one entry per shortest possible entry.
func TestEntryCount(t *testing.T) {
	lim := buildlog.Limits{}.WithDefaults()
	for _, tc := range []struct {
		body string
		n    int // entries the body holds
	}{
		{`[{"message":"a"}]`, 1},
		{`[{"message":"a"},{"message":"b","error_detail":{"x":{"y":1}}},{"message":"}"}]`, 3},
		{"{\"message\":\"a\"}\n{\"message\":\"b\"}\n", 2},
		{`[` + strings.Repeat(`{"timestamp":"2026-03-17T00:00:12Z","level":"info","message":"added 1432 packages"},`, 999) + `{"message":""}]`, 1000},
	} {
		if got := entryCount([]byte(tc.body), lim); got < tc.n || got > 3*tc.n {
			t.Errorf("entryCount(%.40q…) = %d for %d entries", tc.body, got, tc.n)
		}
	}
	braces := []byte(`[{"message":"` + strings.Repeat("}", 100000) + `"}]`)
	if got, most := entryCount(braces, lim), len(braces)/minEntry+1; got > most {
		t.Errorf("entryCount(braces) = %d, want at most %d", got, most)
	}
	if got := entryCount([]byte(strings.Repeat("}", 1<<20)), lim); got != lim.MaxBatch {
		t.Errorf("entryCount(1 MiB of braces) = %d, want the batch limit %d", got, lim.MaxBatch)
	}
}

// BenchmarkDecodeGeneral is DecodeBatch without the fast path, for
// comparison with BenchmarkDecodeBatch (bench_test.go): the same body.
func BenchmarkDecodeGeneral(b *testing.B) {
	var sb strings.Builder
	sb.WriteByte('[')
	for i := range 1000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"timestamp":"2026-03-17T00:00:12.000001Z","level":"info","phase":"install","source":"npm","message":"added 1432 packages, and audited 1433 packages in 31s"}`)
	}
	sb.WriteByte(']')
	body := []byte(sb.String())
	lim := buildlog.Limits{}.WithDefaults()
	b.ReportAllocs()
	for i := 0; i < b.N; i += 1000 {
		if _, _, err := decodeGeneral(body, false, lim); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzValidTimestamp: the fast check of the usual form never takes what
// time.Parse refuses, and validTimestamp as a whole answers as time.Parse.
func FuzzValidTimestamp(f *testing.F) {
	for _, s := range []string{
		"2026-03-17T00:00:12Z", "2026-03-17T00:00:12.345678Z", "2026-03-17T00:00:12.5+02:00", "2024-02-29T23:59:59Z",
		"2023-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-04-31T00:00:00Z", "2026-03-17T24:00:00Z", "2026-03-17T00:60:00Z",
		"2026-03-17T00:00:60Z", "2026-03-17t00:00:12z", "2026-03-17 00:00:12Z", "2026-03-17T00:00:12.Z", "2026-03-17T00:00:12,5Z",
		"0000-01-01T00:00:00Z", "1900-02-29T00:00:00Z", "2000-02-29T00:00:00Z", "+2026-03-17T00:00:12Z", "2026-03-17T00:00:12.0000000000001Z", "",
	} {
		f.Add(s)
	}
	for _, s := range []string{"2026-03-17T00:00:12Z", "2026-03-17T00:00:12.345678Z", "2024-02-29T23:59:59Z", "2000-02-29T00:00:00.5Z"} {
		if !utcTimestamp(s) {
			f.Fatalf("utcTimestamp(%q) = false: the usual form is left to time.Parse", s)
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, err := time.Parse(time.RFC3339Nano, s)
		if utcTimestamp(s) && err != nil {
			t.Fatalf("utcTimestamp(%q) took what time.Parse refuses: %v", s, err)
		}
		if validTimestamp(s) != (err == nil) {
			t.Fatalf("validTimestamp(%q) = %v, time.Parse: %v", s, validTimestamp(s), err)
		}
	})
}
