package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
)

// encoding/json matches an object's keys to fields regardless of case, so
// {"MESSAGE": …} would fill Message and DisallowUnknownFields would not
// say a word. The wire format's field names are exact (a producer that
// sends "Level" has a bug it should hear of), so strictUnmarshal checks
// every key of every object it decoded into a struct against the names
// the struct declares, as they are spelt, and refuses a key given twice:
// encoding/json keeps the last, other parsers (an OpenAPI validator, a
// proxy's filter) the first, and a body two readers read differently is
// a body to refuse rather than guess at.

var (
	rawMessageType  = reflect.TypeFor[json.RawMessage]()
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	fieldNames      sync.Map // reflect.Type → map[string]reflect.Type
)

// exactKeys reports the first key in data, a JSON value that decoded into
// a t, that names no field of its struct exactly or repeats one.
func exactKeys(data []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return checkValue(dec, t)
}

func checkValue(dec *json.Decoder, t reflect.Type) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	d, isDelim := tok.(json.Delim)
	if !isDelim {
		return nil // a scalar: its type was checked by the decoding
	}
	opaque := t == rawMessageType || reflect.PointerTo(t).Implements(unmarshalerType)
	switch {
	case d == '{' && t.Kind() == reflect.Struct && !opaque:
		fields := structFields(t)
		var seen []string // a struct has a handful of fields: a scan beats a map
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ := k.(string)
			ft, ok := fields[key]
			if !ok {
				return fmt.Errorf("json: unknown field %q", key)
			}
			if slices.Contains(seen, key) {
				return fmt.Errorf("json: duplicate field %q", key)
			}
			seen = append(seen, key)
			if err := checkValue(dec, ft); err != nil {
				return err
			}
		}
	case d == '[' && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && !opaque:
		for dec.More() {
			if err := checkValue(dec, t.Elem()); err != nil {
				return err
			}
		}
	default:
		// Free JSON (a raw message, a map, an interface): any keys.
		for depth := 1; depth > 0; {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			if d, ok := tok.(json.Delim); ok {
				if d == '{' || d == '[' {
					depth++
				} else {
					depth--
				}
			}
		}
		return nil
	}
	_, err = dec.Token() // the closing delimiter
	return err
}

// structFields maps the JSON names of t's fields, embedded structs'
// included, to their types.
func structFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldNames.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		switch {
		case name == "-" && !strings.Contains(tag, ","):
			continue
		case f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct:
			for k, v := range structFields(f.Type) {
				m[k] = v
			}
			continue
		case !f.IsExported():
			continue
		case name == "":
			name = f.Name
		}
		m[name] = f.Type
	}
	fieldNames.Store(t, m)
	return m
}
