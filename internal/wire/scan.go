package wire

import (
	"bytes"
	"encoding/json"
)

// ScanLine returns a stored line's kind, level and phase (empty when it
// has none), for filters: read in place from the canonical layout, and
// decoded only when a line is not laid out that way. ok is false when the
// line is not a JSON object.
func ScanLine(line []byte) (kind, level, phase []byte, ok bool) {
	if kind, level, phase, ok = scanCanonical(line); ok {
		return kind, level, phase, true
	}
	var e struct {
		Kind  string `json:"kind"`
		Level string `json:"level"`
		Phase string `json:"phase"`
	}
	if json.Unmarshal(line, &e) != nil {
		return nil, nil, nil, false
	}
	return []byte(e.Kind), []byte(e.Level), []byte(e.Phase), true
}

// LastTimestamp returns the timestamp of the last of chunk data's lines,
// or "" if it has none that can be read.
func LastTimestamp(data []byte) string {
	data = bytes.TrimRight(data, "\n")
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		data = data[i+1:]
	}
	var e struct {
		Timestamp string `json:"timestamp"`
	}
	if json.Unmarshal(data, &e) != nil {
		return ""
	}
	return e.Timestamp
}

var (
	kindKey    = []byte(`,"kind":"`)
	levelKey   = []byte(`,"level":"`)
	messageKey = []byte(`,"message":"`)
	phaseKey   = []byte(`,"phase":"`)
)

// scanCanonical picks kind, level and phase out of a stored line without
// decoding it, relying on the canonical encoder's field order: build_id,
// template_id, offset, timestamp, kind, level, message, then phase if any,
// and only then anything nested. Inside a JSON string every '"' is
// escaped, so `,"kind":"` cannot occur in the strings before it, and the
// first match is the field itself. Values of kind, level and phase never
// need escaping. ok is false when the line is not laid out that way.
func scanCanonical(line []byte) (kind, level, phase []byte, ok bool) {
	i := bytes.Index(line, kindKey)
	if i < 0 {
		return nil, nil, nil, false
	}
	rest := line[i+len(kindKey):]
	if kind, rest, ok = plainString(rest); !ok {
		return nil, nil, nil, false
	}
	if rest, ok = bytes.CutPrefix(rest, levelKey); !ok {
		return nil, nil, nil, false
	}
	if level, rest, ok = plainString(rest); !ok {
		return nil, nil, nil, false
	}
	if rest, ok = bytes.CutPrefix(rest, messageKey); !ok {
		return nil, nil, nil, false
	}
	// Skip the message: it ends at the first '"' not escaped.
	j := 0
	for ; j < len(rest); j++ {
		if rest[j] == '\\' {
			j++
			continue
		}
		if rest[j] == '"' {
			break
		}
	}
	if j >= len(rest) {
		return nil, nil, nil, false
	}
	rest = rest[j+1:]
	if rest, found := bytes.CutPrefix(rest, phaseKey); found {
		if phase, _, ok = plainString(rest); !ok {
			return nil, nil, nil, false
		}
	}
	return kind, level, phase, true
}

// plainString returns the bytes up to the closing quote of a string value
// that has no escapes, and what follows the quote.
func plainString(b []byte) (val, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '"')
	if i < 0 || bytes.IndexByte(b[:i], '\\') >= 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}
