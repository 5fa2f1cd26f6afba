package wire

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"buildlog"
)

// fieldSamples is a valid producer value for every field. A field added to
// the table needs one here, and then every test below checks it.
var fieldSamples = map[string]string{
	"build_id":        `"ignored"`,
	"template_id":     `"ignored"`,
	"offset":          `99`,
	"timestamp":       `"2026-03-17T00:00:12.5+02:00"`,
	"kind":            `"cache"`,
	"level":           `"warn"`,
	"message":         `"Snapshot complete"`,
	"phase":           `"install"`,
	"source":          `"npm"`,
	"step_index":      `2`,
	"total_steps":     `3`,
	"attempt":         `1`,
	"max_attempts":    `2`,
	"cache_kind":      `"layer"`,
	"cache_status":    `"hit"`,
	"cache_reason":    `"force_upload"`,
	"cache_subject":   `"RUN npm ci"`,
	"error_detail":    `{"a":[1,{"b":null}]}`,
	"result":          `{"ok":true}`,
	"result_metadata": `{"k":"v"}`,
}

func jsonKey(f reflect.StructField) string {
	key, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return key
}

// TestFieldsAreEntry: the table and buildlog.Entry name the same fields,
// in the same order, with the same keys, and each Go type fits its kind.
func TestFieldsAreEntry(t *testing.T) {
	str := reflect.TypeFor[string]()
	typ := reflect.TypeFor[buildlog.Entry]()
	want := map[fieldKind]func(reflect.Type) bool{
		kindServer:    func(t reflect.Type) bool { return t == str || t.Kind() == reflect.Uint64 },
		kindString:    func(t reflect.Type) bool { return t.Kind() == reflect.String },
		kindOptString: func(t reflect.Type) bool { return t.Kind() == reflect.String },
		kindPtrString: func(t reflect.Type) bool { return t == reflect.TypeFor[*string]() },
		kindPtrInt:    func(t reflect.Type) bool { return t == reflect.TypeFor[*int64]() },
		kindObject:    func(t reflect.Type) bool { return t == reflect.TypeFor[json.RawMessage]() },
	}
	for i := range max(typ.NumField(), len(fields)) {
		if i >= len(fields) || i >= typ.NumField() {
			t.Fatalf("buildlog.Entry has %d fields, the table %d: add the missing one to both, in the same place", typ.NumField(), len(fields))
		}
		sf, f := typ.Field(i), fields[i]
		if sf.Name != f.name || jsonKey(sf) != f.key {
			t.Fatalf("field %d: buildlog.Entry has %s %q, the table %s %q", i, sf.Name, jsonKey(sf), f.name, f.key)
		}
		if !want[f.kind](sf.Type) {
			t.Errorf("%s: Go type %s does not fit its kind %d", f.name, sf.Type, f.kind)
		}
		if _, ok := fieldSamples[f.key]; !ok {
			t.Errorf("%s: no sample value in fieldSamples", f.key)
		}
	}
}

// TestFieldsAreProducerEntry: the general decoder's struct is the table.
func TestFieldsAreProducerEntry(t *testing.T) {
	typ := reflect.TypeFor[producerEntry]()
	if typ.NumField() != len(fields) {
		t.Fatalf("producerEntry has %d fields, the table %d", typ.NumField(), len(fields))
	}
	for i, f := range fields {
		sf := typ.Field(i)
		if sf.Name != f.name || jsonKey(sf) != f.key {
			t.Errorf("field %d: producerEntry has %s %q, the table %s %q", i, sf.Name, jsonKey(sf), f.name, f.key)
		}
	}
}

// lineKeys is the keys of a JSON object in the order they are written.
func lineKeys(t *testing.T, line []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", line)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// tableKeys is the keys of the table a line with only the fields in has
// should carry, in order: the always-written ones and those.
func tableKeys(has map[string]bool) []string {
	var keys []string
	for _, f := range fields {
		if f.kind == kindServer || f.kind == kindString || has[f.key] {
			keys = append(keys, f.key)
		}
	}
	return keys
}

// decodeBoth decodes body on both paths, which must agree, the fast one
// taking it.
func decodeBoth(t *testing.T, body string) buildlog.Entry {
	t.Helper()
	lim := buildlog.Limits{}.WithDefaults()
	fe, _, ok := decodeFast([]byte(body), false, lim)
	if !ok {
		t.Fatalf("%s: the fast path did not take it (does its key switch know every field?)", body)
	}
	ge, _, err := decodeGeneral([]byte(body), false, lim)
	if err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	if !reflect.DeepEqual(fe, ge) {
		t.Fatalf("%s: fast path %+v, general path %+v", body, fe[0], ge[0])
	}
	return ge[0]
}

// TestEveryFieldRoundTrips sends each field alone, then all together:
// both decoders take it alike, the encoder writes it under its key, in the
// table's place, with the value sent (the server's fields excepted), and
// an entry without it has no key for it.
func TestEveryFieldRoundTrips(t *testing.T) {
	all := map[string]bool{}
	var parts []string
	for _, f := range fields {
		all[f.key] = true
		parts = append(parts, `"`+f.key+`":`+fieldSamples[f.key])
		body := `[{"message":"m","` + f.key + `":` + fieldSamples[f.key] + `}]`
		if f.key == "message" {
			body = `[{"message":` + fieldSamples[f.key] + `}]`
		}
		e := decodeBoth(t, body)
		e.BuildID, e.TemplateID, e.Offset = "b", "t", 7
		line := AppendEntry(nil, &e)
		if got, want := lineKeys(t, line), tableKeys(map[string]bool{f.key: true}); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: line keys %v, want %v: %s", f.key, got, want, line)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%s: %v: %s", f.key, err, line)
		}
		if f.kind != kindServer && string(m[f.key]) != fieldSamples[f.key] {
			t.Errorf("%s: written as %s, sent as %s", f.key, m[f.key], fieldSamples[f.key])
		}
		var back buildlog.Entry
		if err := json.Unmarshal(line, &back); err != nil || !reflect.DeepEqual(back, e) {
			t.Errorf("%s: the line decodes to %+v (%v), want %+v", f.key, back, err, e)
		}
	}
	e := decodeBoth(t, "[{"+strings.Join(parts, ",")+"}]")
	if got, want := lineKeys(t, AppendEntry(nil, &e)), tableKeys(all); !reflect.DeepEqual(got, want) {
		t.Errorf("all fields: line keys %v, want %v", got, want)
	}
}

// TestScannersFollowFields: scanCanonical and appendCLineFast read a line
// in the table's order up to the source, without decoding it; a field
// moved or put before the source must change them too.
func TestScannersFollowFields(t *testing.T) {
	want := []string{"build_id", "template_id", "offset", "timestamp", "kind", "level", "message", "phase", "source"}
	var got []string
	for _, f := range fields[:len(want)] {
		got = append(got, f.key)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the table starts %v; the scanners read %v", got, want)
	}
	var parts []string
	for _, f := range fields {
		parts = append(parts, `"`+f.key+`":`+fieldSamples[f.key])
	}
	e := decodeBoth(t, "[{"+strings.Join(parts, ",")+"}]")
	line := AppendEntry(nil, &e)
	if kind, level, phase, ok := scanCanonical(line); !ok || string(kind) != string(e.Kind) || string(level) != string(e.Level) || string(phase) != e.Phase {
		t.Errorf("scanCanonical: %s %s %s %v: %s", kind, level, phase, ok, line)
	}
	if _, ok := appendCLineFast(nil, line); !ok {
		t.Errorf("appendCLineFast did not take a line with every field: %s", line)
	}
}

// TestAppendBodyCarriesEveryField: what the Go client sends decodes back
// to the entry it was given, one field at a time and all together, the
// server's fields left out.
func TestAppendBodyCarriesEveryField(t *testing.T) {
	var all []string
	for _, f := range fields {
		if f.kind == kindServer {
			continue
		}
		all = append(all, `"`+f.key+`":`+fieldSamples[f.key])
		body := `[{"message":"m","` + f.key + `":` + fieldSamples[f.key] + `}]`
		if f.key == "message" {
			body = `[{"message":` + fieldSamples[f.key] + `}]`
		}
		checkAppendBody(t, decodeBoth(t, body))
	}
	checkAppendBody(t, decodeBoth(t, "[{"+strings.Join(all, ",")+"}]"))
	if _, err := AppendBody(nil, 0, []buildlog.Entry{{Message: "m", Result: json.RawMessage(`{"a":`)}}); buildlog.ErrorCode(err) != buildlog.EInvalid {
		t.Errorf("a broken raw field: %v, want invalid", err)
	}
}

func checkAppendBody(t *testing.T, want buildlog.Entry) {
	t.Helper()
	body, err := AppendBody(nil, 42, []buildlog.Entry{want, {Message: "defaults"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fields {
		if f.kind == kindServer && bytes.Contains(body, []byte(`"`+f.key+`"`)) {
			t.Errorf("the body sends the server's field %s: %s", f.key, body)
		}
	}
	lim := buildlog.Limits{}.WithDefaults()
	got, first, ok := decodeFast(body, false, lim)
	if !ok {
		t.Fatalf("the fast path did not take the client's body: %s", body)
	}
	defaults := buildlog.Entry{Kind: buildlog.KindMessage, Level: buildlog.LevelInfo, Message: "defaults"}
	if first == nil || *first != 42 || !reflect.DeepEqual(got, []buildlog.Entry{want, defaults}) {
		t.Errorf("body %s\ndecodes to %+v (first %v)\nwant %+v", body, got, first, []buildlog.Entry{want, defaults})
	}
}
