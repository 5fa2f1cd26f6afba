package wire

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"buildlog"
)

// decodeFast decodes the append bodies producers send every day without
// encoding/json's reflection and per-entry Decoder, which cost ~10 µs an
// entry and bounded durable ingest (see docs/PERFORMANCE.md). It accepts a
// strict subset of what the general path accepts, decodes it to the same
// values and validates it with the same checkEntry; on anything else, an
// error of any kind included, it answers ok=false and the general path
// decides, so error messages and edge cases (case-insensitive or duplicate
// keys, surrogate escapes, invalid UTF-8, odd whitespace) stay exactly as
// they were.
func decodeFast(body []byte, ndjson bool, lim buildlog.Limits) (entries []buildlog.Entry, first *uint64, ok bool) {
	if ndjson {
		return decodeFastNDJSON(body, lim)
	}
	p := fastParser{b: body, s: string(body)}
	p.ws()
	switch p.peek() {
	case '[':
		if entries, ok = p.entries(lim); !ok {
			return nil, nil, false
		}
	case '{':
		// {"entries":[...],"first_offset":N}, each key once, in any order.
		p.i++
		seen := 0
		for {
			p.ws()
			key, ok := p.key()
			if !ok {
				return nil, nil, false
			}
			p.ws()
			switch string(key) {
			case "entries":
				if seen&1 != 0 || p.peek() != '[' {
					return nil, nil, false
				}
				seen |= 1
				if entries, ok = p.entries(lim); !ok {
					return nil, nil, false
				}
			case "first_offset":
				if seen&2 != 0 {
					return nil, nil, false
				}
				seen |= 2
				n, ok := p.uint()
				if !ok {
					return nil, nil, false
				}
				first = &n
			default:
				return nil, nil, false
			}
			p.ws()
			if p.peek() == '}' {
				p.i++
				break
			}
			if p.peek() != ',' {
				return nil, nil, false
			}
			p.i++
		}
		if seen&1 == 0 {
			return nil, nil, false
		}
	default:
		return nil, nil, false
	}
	p.ws()
	if p.i != len(p.b) {
		return nil, nil, false
	}
	return entries, first, true
}

func decodeFastNDJSON(body []byte, lim buildlog.Limits) ([]buildlog.Entry, *uint64, bool) {
	entries := make([]buildlog.Entry, 0, entryCount(body, lim))
	p := fastParser{s: string(body)}
	for start := 0; start < len(body); {
		end := len(body)
		if i := bytes.IndexByte(body[start:], '\n'); i >= 0 {
			end = start + i
		}
		// The general path trims Unicode spaces around a line; JSON's
		// own are all this takes, and anything else falls back to it.
		p.b, p.i = body[:end], start
		start = end + 1
		p.ws()
		if p.i == end {
			continue
		}
		if len(entries) == lim.MaxBatch {
			return nil, nil, false
		}
		var pe producerEntry
		if !p.entry(&pe) {
			return nil, nil, false
		}
		if p.ws(); p.i != end {
			return nil, nil, false
		}
		entries = append(entries, buildlog.Entry{})
		if checkEntry(&pe, len(entries)-1, lim, &entries[len(entries)-1]) != nil {
			return nil, nil, false
		}
	}
	if len(entries) == 0 {
		return nil, nil, false
	}
	return entries, nil, true
}

// entryCount guesses how many entries body holds, to size the slice
// once. Every entry object ends in a brace, so their count is an upper
// bound that nested objects and braces in strings only make high; it is
// counted a vector at a time, where counting the "message" keys (as
// before) searched for every quote: 6% of the server's CPU at 1,000-entry
// appends. A guess from the body's length alone fell short for typical
// entries and growing the slice copied its 288-byte elements, so length
// only bounds the guess: no entry is shorter than minEntry bytes, which
// keeps a body of braces from sizing a slice 288 times its own size.
func entryCount(body []byte, lim buildlog.Limits) int {
	return min(max(bytes.Count(body, []byte{'}'}), 1), len(body)/minEntry+1, lim.MaxBatch)
}

// minEntry is the length of the shortest entry, {"message":""}.
const minEntry = len(`{"message":""}`)

// fastParser reads JSON from b at i. Every method answers false for input
// it does not handle, valid JSON or not.
//
// Strings without escapes are slices of s, one copy of the whole body, and
// the *string fields point into strs: two allocations a batch rather than
// two a field.
type fastParser struct {
	b    []byte
	i    int
	s    string   // string(b), made once
	strs []string // backing for *string fields
}

func (p *fastParser) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

// ws skips JSON whitespace.
func (p *fastParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// entries reads a non-empty array of entry objects and validates them.
func (p *fastParser) entries(lim buildlog.Limits) ([]buildlog.Entry, bool) {
	p.i++ // '['
	entries := make([]buildlog.Entry, 0, entryCount(p.b[p.i:], lim))
	for {
		p.ws()
		if len(entries) == lim.MaxBatch {
			return nil, false
		}
		var pe producerEntry
		if !p.entry(&pe) {
			return nil, false
		}
		entries = append(entries, buildlog.Entry{})
		if checkEntry(&pe, len(entries)-1, lim, &entries[len(entries)-1]) != nil {
			return nil, false
		}
		p.ws()
		switch p.peek() {
		case ',':
			p.i++
		case ']':
			p.i++
			return entries, true
		default:
			return nil, false
		}
	}
}

// Bits of producerEntry's fields, to refuse a key given twice (the general
// path lets the last one win; leaving that to it keeps the rule in one place).
const (
	fBuildID = 1 << iota
	fTemplateID
	fOffset
	fTimestamp
	fKind
	fLevel
	fMessage
	fPhase
	fSource
	fStepIndex
	fTotalSteps
	fAttempt
	fMaxAttempts
	fCacheKind
	fCacheStatus
	fCacheReason
	fCacheSubject
	fErrorDetail
	fResult
	fResultMetadata
)

// entry reads one entry object into pe. Keys must match producerEntry's
// tags exactly (encoding/json would also take other cases).
func (p *fastParser) entry(pe *producerEntry) bool {
	if p.peek() != '{' {
		return false
	}
	p.i++
	p.ws()
	if p.peek() == '}' {
		p.i++
		return true
	}
	seen := 0
	for {
		p.ws()
		key, ok := p.key()
		if !ok {
			return false
		}
		p.ws()
		var bit int
		switch string(key) {
		case "message":
			bit, ok = fMessage, p.optString(&pe.Message)
		case "timestamp":
			bit, ok = fTimestamp, p.optString(&pe.Timestamp)
		case "level":
			bit, ok = fLevel, p.optString(&pe.Level)
		case "kind":
			bit, ok = fKind, p.optString(&pe.Kind)
		case "phase":
			bit, ok = fPhase, p.optString(&pe.Phase)
		case "source":
			bit, ok = fSource, p.optString(&pe.Source)
		case "step_index":
			bit, ok = fStepIndex, p.optInt(&pe.StepIndex)
		case "total_steps":
			bit, ok = fTotalSteps, p.optInt(&pe.TotalSteps)
		case "attempt":
			bit, ok = fAttempt, p.optInt(&pe.Attempt)
		case "max_attempts":
			bit, ok = fMaxAttempts, p.optInt(&pe.MaxAttempts)
		case "cache_kind":
			bit, ok = fCacheKind, p.optString(&pe.CacheKind)
		case "cache_status":
			bit, ok = fCacheStatus, p.optString(&pe.CacheStatus)
		case "cache_reason":
			bit, ok = fCacheReason, p.optString(&pe.CacheReason)
		case "cache_subject":
			bit, ok = fCacheSubject, p.optString(&pe.CacheSubject)
		case "error_detail":
			bit, ok = fErrorDetail, p.raw(&pe.ErrorDetail)
		case "result":
			bit, ok = fResult, p.raw(&pe.Result)
		case "result_metadata":
			bit, ok = fResultMetadata, p.raw(&pe.ResultMetadata)
		case "build_id":
			bit, ok = fBuildID, p.raw(&pe.BuildID)
		case "template_id":
			bit, ok = fTemplateID, p.raw(&pe.TemplateID)
		case "offset":
			bit, ok = fOffset, p.raw(&pe.Offset)
		default:
			return false
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		p.ws()
		switch p.peek() {
		case ',':
			p.i++
		case '}':
			p.i++
			return true
		default:
			return false
		}
	}
}

// key reads an object key and the colon after it. Keys with escapes are
// left to the general path.
func (p *fastParser) key() ([]byte, bool) {
	if p.peek() != '"' {
		return nil, false
	}
	end := bytes.IndexByte(p.b[p.i+1:], '"')
	if end < 0 {
		return nil, false
	}
	k := p.b[p.i+1 : p.i+1+end]
	if bytes.IndexByte(k, '\\') >= 0 {
		return nil, false
	}
	p.i += end + 2
	p.ws()
	if p.peek() != ':' {
		return nil, false
	}
	p.i++
	return k, true
}

// optString reads a string, or null (which leaves *dst nil, as
// encoding/json does for a pointer).
func (p *fastParser) optString(dst **string) bool {
	if p.null() {
		*dst = nil
		return true
	}
	s, ok := p.str()
	if !ok {
		return false
	}
	if len(p.strs) == cap(p.strs) {
		// Earlier pointers keep the old array alive; nothing moves. The
		// first array is sized by the body (a string field takes a dozen
		// bytes of it or more), the next ones double, to 1,024: a fixed
		// 1,024 was 16 KiB for a ten-entry batch, the most of what an
		// append allocated, and kept until its commit.
		n := len(p.s)/12 + 8
		if cap(p.strs) > 0 {
			n = 2 * cap(p.strs)
		}
		p.strs = make([]string, 0, min(n, 1024))
	}
	p.strs = append(p.strs, s)
	*dst = &p.strs[len(p.strs)-1]
	return true
}

func (p *fastParser) null() bool {
	if bytes.HasPrefix(p.b[p.i:], []byte("null")) {
		p.i += 4
		return true
	}
	return false
}

// str reads a string value, decoding the escapes JSON defines. Surrogate
// escapes and invalid UTF-8 (which encoding/json replaces with U+FFFD) are
// left to the general path.
func (p *fastParser) str() (string, bool) {
	if p.peek() != '"' {
		return "", false
	}
	start := p.i + 1
	ascii := true
	for j := start; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			s := p.b[start:j]
			if !ascii && !utf8.Valid(s) {
				return "", false
			}
			p.i = j + 1
			return p.s[start:j], true
		case c == '\\':
			return p.strEscaped(start, j)
		case c < 0x20:
			return "", false
		case c >= 0x80:
			ascii = false
		}
	}
	return "", false
}

// strEscaped finishes a string that has an escape at j.
func (p *fastParser) strEscaped(start, j int) (string, bool) {
	buf := make([]byte, 0, j-start+64)
	run := start // start of the literal run not yet copied
	flush := func(end int) bool {
		lit := p.b[run:end]
		buf = append(buf, lit...)
		for _, c := range lit {
			if c >= 0x80 {
				return utf8.Valid(lit)
			}
		}
		return true
	}
	for j < len(p.b) {
		c := p.b[j]
		switch {
		case c == '"':
			if !flush(j) {
				return "", false
			}
			p.i = j + 1
			return string(buf), true
		case c < 0x20:
			return "", false
		case c != '\\':
			j++
			continue
		}
		if !flush(j) || j+1 >= len(p.b) {
			return "", false
		}
		switch e := p.b[j+1]; e {
		case '"', '\\', '/':
			buf = append(buf, e)
			j += 2
		case 'b':
			buf, j = append(buf, '\b'), j+2
		case 'f':
			buf, j = append(buf, '\f'), j+2
		case 'n':
			buf, j = append(buf, '\n'), j+2
		case 'r':
			buf, j = append(buf, '\r'), j+2
		case 't':
			buf, j = append(buf, '\t'), j+2
		case 'u':
			if j+6 > len(p.b) {
				return "", false
			}
			r, err := strconv.ParseUint(string(p.b[j+2:j+6]), 16, 32)
			if err != nil || (r >= 0xD800 && r < 0xE000) {
				return "", false
			}
			buf = utf8.AppendRune(buf, rune(r))
			j += 6
		default:
			return "", false
		}
		run = j
	}
	return "", false
}

// optInt reads an integer that fits int64, or null. Fractions and
// exponents, which encoding/json refuses for an int64, are left to it.
func (p *fastParser) optInt(dst **int64) bool {
	if p.null() {
		*dst = nil
		return true
	}
	s, ok := p.digits(true)
	if !ok {
		return false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return false
	}
	*dst = &n
	return true
}

// uint reads a non-negative integer that fits uint64.
func (p *fastParser) uint() (uint64, bool) {
	s, ok := p.digits(false)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// digits reads a JSON integer: -?(0|[1-9][0-9]*), not followed by a
// fraction or exponent.
func (p *fastParser) digits(signed bool) (string, bool) {
	start := p.i
	if signed && p.peek() == '-' {
		p.i++
	}
	d := p.i
	for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
		p.i++
	}
	if p.i == d || (p.b[d] == '0' && p.i-d > 1) {
		return "", false
	}
	switch p.peek() {
	case '.', 'e', 'E':
		return "", false
	}
	return string(p.b[start:p.i]), true
}

// raw reads any JSON value as it is, for the fields kept as raw JSON (the
// general path checks and compacts them alike in checkEntry).
func (p *fastParser) raw(dst *json.RawMessage) bool {
	start := p.i
	if !p.skip() {
		return false
	}
	v := p.b[start:p.i]
	if !json.Valid(v) {
		return false
	}
	*dst = v
	return true
}

// skip moves past one value, roughly: raw then checks it with json.Valid.
func (p *fastParser) skip() bool {
	depth := 0
	for p.i < len(p.b) {
		switch c := p.b[p.i]; c {
		case '"':
			p.i++
			for p.i < len(p.b) && p.b[p.i] != '"' {
				if p.b[p.i] == '\\' {
					p.i++
				}
				p.i++
			}
			if p.i >= len(p.b) {
				return false
			}
			p.i++
		case '{', '[':
			depth++
			p.i++
		case '}', ']':
			if depth == 0 {
				return true
			}
			depth--
			p.i++
		case ',':
			if depth == 0 {
				return true
			}
			p.i++
		default:
			p.i++
		}
		if depth == 0 && p.i < len(p.b) {
			switch p.b[p.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return true
			}
		}
	}
	return depth == 0
}
