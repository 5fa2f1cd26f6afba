package wire

import (
	"bytes"
	"encoding/json"
	"time"
)

// AppendCLine appends a stored entry line's dialect C text, as a JSON
// string: "[<source, or builder>] <UTC time> <message>".
//
// Decoding each line with encoding/json only to re-encode three of its
// fields cost 5-7 µs a line and bounded polling at ~200k lines/s. Stored
// lines are canonical (AppendEntryHead/AppendEntryTail: the key order of
// fields, one string escaper), and JSON string escaping works rune by
// rune, so the encoded message and source can be copied into the output
// string as they are. Anything that is not a canonical line takes the decoding path.
func AppendCLine(dst, line []byte) ([]byte, error) {
	if out, ok := appendCLineFast(dst, line); ok {
		return out, nil
	}
	var e cEntry
	if err := json.Unmarshal(line, &e); err != nil {
		return dst, err
	}
	return appendString(dst, e.text()), nil
}

// cLine scans a canonical line.
type cLine struct {
	b []byte
	i int
}

// lit consumes s.
func (p *cLine) lit(s string) bool {
	if !bytes.HasPrefix(p.b[p.i:], []byte(s)) {
		return false
	}
	p.i += len(s)
	return true
}

// str consumes the rest of a JSON string whose opening quote is already
// consumed, and returns its encoded contents.
func (p *cLine) str() ([]byte, bool) {
	start := p.i
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case '"':
			s := p.b[start:p.i]
			p.i++
			return s, true
		case '\\':
			p.i += 2
		default:
			p.i++
		}
	}
	return nil, false
}

func appendCLineFast(dst, line []byte) ([]byte, bool) {
	p := cLine{b: line}
	if !p.lit(`{"build_id":"`) {
		return dst, false
	}
	if _, ok := p.str(); !ok || !p.lit(`,"template_id":"`) {
		return dst, false
	}
	if _, ok := p.str(); !ok || !p.lit(`,"offset":`) {
		return dst, false
	}
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	if !p.lit(`,"timestamp":"`) {
		return dst, false
	}
	ts, ok := p.str()
	if !ok || bytes.IndexByte(ts, '\\') >= 0 || !p.lit(`,"kind":"`) {
		return dst, false
	}
	if _, ok := p.str(); !ok || !p.lit(`,"level":"`) {
		return dst, false
	}
	if _, ok := p.str(); !ok || !p.lit(`,"message":"`) {
		return dst, false
	}
	msg, ok := p.str()
	if !ok {
		return dst, false
	}
	if p.lit(`,"phase":"`) {
		if _, ok := p.str(); !ok {
			return dst, false
		}
	}
	src := []byte("builder")
	if p.lit(`,"source":"`) {
		s, ok := p.str()
		if !ok {
			return dst, false
		}
		if len(s) > 0 {
			src = s
		}
	}
	dst = append(dst, `"[`...)
	dst = append(dst, src...)
	dst = append(dst, "] "...)
	dst = appendCTime(dst, ts)
	dst = append(dst, ' ')
	dst = append(dst, msg...)
	return append(dst, '"'), true
}

// appendCTime appends ts (RFC 3339, no escapes) in cTimeLayout, in UTC. The
// common case, a UTC time as the server writes it, is rearranged without
// parsing; the fraction is dropped as Format drops it.
func appendCTime(dst, ts []byte) []byte {
	if len(ts) >= 20 && ts[4] == '-' && ts[7] == '-' && ts[10] == 'T' && ts[13] == ':' && ts[16] == ':' &&
		digits(ts[0:4]) && digits(ts[5:7]) && digits(ts[8:10]) && digits(ts[11:13]) && digits(ts[14:16]) && digits(ts[17:19]) {
		rest := ts[19:]
		if rest[0] == '.' {
			j := 1
			for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
				j++
			}
			if j > 1 {
				rest = rest[j:]
			}
		}
		// Calendar and clock ranges need no check here: every stored
		// timestamp passed time.Parse when it was appended.
		if string(rest) == "Z" {
			dst = append(dst, ts[0:4]...)
			dst = append(dst, '/')
			dst = append(dst, ts[5:7]...)
			dst = append(dst, '/')
			dst = append(dst, ts[8:10]...)
			dst = append(dst, ' ')
			return append(dst, ts[11:19]...)
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, string(ts)); err == nil {
		return t.UTC().AppendFormat(dst, cTimeLayout)
	}
	// As text() does: a timestamp that does not parse is shown as stored.
	// It has no backslash, so its encoded and decoded forms differ only
	// in what needs no escaping.
	return append(dst, ts...)
}

func digits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// cEntry is what a dialect C line needs of an entry.
type cEntry struct {
	Timestamp string  `json:"timestamp"`
	Message   string  `json:"message"`
	Source    *string `json:"source"`
}

// cTimeLayout is the seed's line time, always in UTC.
const cTimeLayout = "2006/01/02 15:04:05"

// text is the line "[<source, or builder>] <UTC time> <message>".
func (e *cEntry) text() string {
	src := "builder"
	if e.Source != nil && *e.Source != "" {
		src = *e.Source
	}
	ts := e.Timestamp
	if t, err := time.Parse(time.RFC3339Nano, e.Timestamp); err == nil {
		ts = t.UTC().Format(cTimeLayout)
	}
	return "[" + src + "] " + ts + " " + e.Message
}
