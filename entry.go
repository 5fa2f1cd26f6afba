package buildlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind says what an entry records.
type Kind string

const (
	KindStart     Kind = "start"
	KindMessage   Kind = "message"
	KindCache     Kind = "cache"
	KindRetry     Kind = "retry"
	KindWarning   Kind = "warning"
	KindError     Kind = "error"
	KindCancelled Kind = "cancelled" // written only by Finish
	KindEnd       Kind = "end"       // written only by Finish
)

// Kinds lists every kind, in the order the SPEC names them.
var Kinds = []Kind{KindStart, KindMessage, KindCache, KindRetry, KindWarning, KindError, KindCancelled, KindEnd}

// Level is an entry's severity; levels are ordered debug < info < warn < error.
type Level string

const (
	LevelDebug Level = "debug"
	LevelInfo  Level = "info"
	LevelWarn  Level = "warn"
	LevelError Level = "error"
)

// Levels lists every level from least to most severe.
var Levels = []Level{LevelDebug, LevelInfo, LevelWarn, LevelError}

// Rank orders levels for minimum-level filters; an unknown level ranks -1.
func (l Level) Rank() int {
	for i, v := range Levels {
		if v == l {
			return i
		}
	}
	return -1
}

var (
	cacheKinds    = []string{"file_blob", "layer", "final_artifact"}
	cacheStatuses = []string{"hit", "miss", "stored", "bypass"}
	cacheReasons  = []string{"whole_build_skip_cache", "builder_cache_boundary", "force_upload", "missing_or_incompatible"}
)

// validPhase is ^[a-z][a-z0-9_-]{0,63}$, without a regexp: it runs for
// every entry of every append.
func validPhase(s string) bool {
	if len(s) == 0 || len(s) > 64 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// MaxSource is the longest source, in bytes.
const MaxSource = 64

// DefaultMaxMessage is the longest message accepted unless configured.
const DefaultMaxMessage = 64 << 10

// Entry is one log entry in its canonical form. Optional fields are pointers
// or empty so that what a producer left out stays out of every output.
// Its JSON tags follow the canonical field order; AppendEntry is the encoder
// that readers are served by, and encoding/json decodes its output into this.
type Entry struct {
	BuildID        string          `json:"build_id"`
	TemplateID     string          `json:"template_id"`
	Offset         uint64          `json:"offset"`
	Timestamp      string          `json:"timestamp"`
	Kind           Kind            `json:"kind"`
	Level          Level           `json:"level"`
	Message        string          `json:"message"`
	Phase          string          `json:"phase,omitempty"`
	Source         *string         `json:"source,omitempty"`
	StepIndex      *int64          `json:"step_index,omitempty"`
	TotalSteps     *int64          `json:"total_steps,omitempty"`
	Attempt        *int64          `json:"attempt,omitempty"`
	MaxAttempts    *int64          `json:"max_attempts,omitempty"`
	CacheKind      string          `json:"cache_kind,omitempty"`
	CacheStatus    string          `json:"cache_status,omitempty"`
	CacheReason    string          `json:"cache_reason,omitempty"`
	CacheSubject   *string         `json:"cache_subject,omitempty"`
	ErrorDetail    json.RawMessage `json:"error_detail,omitempty"`
	Result         json.RawMessage `json:"result,omitempty"`
	ResultMetadata json.RawMessage `json:"result_metadata,omitempty"`
}

// Terminal reports whether e is the entry Finish writes.
func (e *Entry) Terminal() bool { return e.Kind == KindEnd || e.Kind == KindCancelled }

// producerEntry is an entry as a producer may send it: every field optional,
// so presence can be told from zero values; unknown fields are rejected by
// the decoder. The server-set fields are accepted and ignored.
type producerEntry struct {
	BuildID        json.RawMessage `json:"build_id"`
	TemplateID     json.RawMessage `json:"template_id"`
	Offset         json.RawMessage `json:"offset"`
	Timestamp      *string         `json:"timestamp"`
	Kind           *string         `json:"kind"`
	Level          *string         `json:"level"`
	Message        *string         `json:"message"`
	Phase          *string         `json:"phase"`
	Source         *string         `json:"source"`
	StepIndex      *int64          `json:"step_index"`
	TotalSteps     *int64          `json:"total_steps"`
	Attempt        *int64          `json:"attempt"`
	MaxAttempts    *int64          `json:"max_attempts"`
	CacheKind      *string         `json:"cache_kind"`
	CacheStatus    *string         `json:"cache_status"`
	CacheReason    *string         `json:"cache_reason"`
	CacheSubject   *string         `json:"cache_subject"`
	ErrorDetail    json.RawMessage `json:"error_detail"`
	Result         json.RawMessage `json:"result"`
	ResultMetadata json.RawMessage `json:"result_metadata"`
}

// Limits bound what a producer may send. Zero fields take the defaults.
type Limits struct {
	MaxBatch   int // entries per batch
	MaxMessage int // bytes per message
}

// DefaultMaxBatch is the most entries one append may carry unless configured.
const DefaultMaxBatch = 10000

func (l Limits) withDefaults() Limits {
	if l.MaxBatch <= 0 {
		l.MaxBatch = DefaultMaxBatch
	}
	if l.MaxMessage <= 0 {
		l.MaxMessage = DefaultMaxMessage
	}
	return l
}

// DecodeBatch parses an append body: a JSON array of entries, an object
// {"entries":[...],"first_offset":N}, or (ndjson) one entry per line.
// It validates every entry and returns them with defaults applied, except the
// timestamp, which Batch fills. firstOffset is nil unless the body names one.
// Errors are *Error with code invalid or too_large, naming entries[i].field.
func DecodeBatch(body []byte, ndjson bool, lim Limits) (entries []Entry, firstOffset *uint64, err error) {
	lim = lim.withDefaults()
	// The everyday body takes a fast path; whatever it does not accept
	// (errors included) is decided below, so both agree by construction.
	if entries, firstOffset, ok := decodeFast(body, ndjson, lim); ok {
		return entries, firstOffset, nil
	}
	return decodeGeneral(body, ndjson, lim)
}

// decodeGeneral is DecodeBatch on encoding/json, for every body.
func decodeGeneral(body []byte, ndjson bool, lim Limits) (entries []Entry, firstOffset *uint64, err error) {
	var raws []json.RawMessage
	if ndjson {
		raws, err = splitNDJSON(body, lim.MaxBatch)
	} else {
		raws, firstOffset, err = splitJSON(body, lim.MaxBatch)
	}
	if err != nil {
		return nil, nil, err
	}
	if len(raws) == 0 {
		return nil, nil, Errorf(EInvalid, "entries: a batch needs at least one entry")
	}
	entries = make([]Entry, len(raws))
	for i, raw := range raws {
		if err := decodeEntry(raw, i, lim, &entries[i]); err != nil {
			return nil, nil, err
		}
	}
	return entries, firstOffset, nil
}

func tooMany(n, max int) error {
	return &Error{Code: ETooLarge, Message: fmt.Sprintf("entries: %d entries in one batch, the limit is %d", n, max)}
}

func splitNDJSON(body []byte, max int) ([]json.RawMessage, error) {
	var raws []json.RawMessage
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if len(raws) == max {
			return nil, tooMany(len(raws)+1+bytes.Count(body, []byte{'\n'}), max)
		}
		raws = append(raws, line)
	}
	return raws, nil
}

func splitJSON(body []byte, max int) ([]json.RawMessage, *uint64, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, nil, Errorf(EInvalid, "body: empty; want a JSON array of entries or {\"entries\":[...]}")
	}
	var raws []json.RawMessage
	var first *uint64
	switch body[0] {
	case '[':
		if err := json.Unmarshal(body, &raws); err != nil {
			return nil, nil, Errorf(EInvalid, "body: %s", jsonProblem(err))
		}
	case '{':
		var obj struct {
			Entries     *[]json.RawMessage `json:"entries"`
			FirstOffset *uint64            `json:"first_offset"`
		}
		if err := strictUnmarshal(body, &obj); err != nil {
			return nil, nil, Errorf(EInvalid, "body%s", fieldProblem(err))
		}
		if obj.Entries == nil {
			return nil, nil, Errorf(EInvalid, "entries: required")
		}
		raws, first = *obj.Entries, obj.FirstOffset
	default:
		return nil, nil, Errorf(EInvalid, "body: want a JSON array of entries or {\"entries\":[...]}")
	}
	if len(raws) > max {
		return nil, nil, tooMany(len(raws), max)
	}
	return raws, first, nil
}

// strictUnmarshal decodes one JSON value into v, rejecting unknown fields
// and trailing data.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("unexpected data after the JSON value")
	}
	// A trailing non-JSON token is not reported by More.
	if _, err := dec.Token(); err == nil {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// fieldProblem renders a decode error as ".field: problem" (or ": problem"
// when no field is known), so callers can prefix a location.
func fieldProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return "." + te.Field + ": want " + jsonTypeName(te.Type.Kind().String()) + ", got " + te.Value
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, `json: unknown field "`); ok {
		return "." + strings.TrimSuffix(f, `"`) + ": unknown field"
	}
	return ": " + jsonProblem(err)
}

func jsonTypeName(kind string) string {
	switch kind {
	case "int", "int64", "uint64":
		return "an integer"
	case "string":
		return "a string"
	case "slice":
		return "an array"
	case "map", "struct", "ptr":
		return "an object"
	}
	return kind
}

func jsonProblem(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("invalid JSON at byte %d: %s", se.Offset, se.Error())
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

func decodeEntry(raw json.RawMessage, i int, lim Limits, e *Entry) error {
	if len(raw) == 0 || raw[0] != '{' {
		return Errorf(EInvalid, "entries[%d]: want a JSON object", i)
	}
	var p producerEntry
	if err := strictUnmarshal(raw, &p); err != nil {
		return Errorf(EInvalid, "entries[%d]%s", i, fieldProblem(err))
	}
	return checkEntry(&p, i, lim, e)
}

// checkEntry validates a decoded producer entry and fills e from it.
func checkEntry(p *producerEntry, i int, lim Limits, e *Entry) error {
	at := func(field, format string, args ...any) error {
		return Errorf(EInvalid, "entries[%d].%s: %s", i, field, fmt.Sprintf(format, args...))
	}
	*e = Entry{Kind: KindMessage, Level: LevelInfo}
	if p.Message == nil {
		return at("message", "required")
	}
	if len(*p.Message) > lim.MaxMessage {
		return at("message", "%d bytes, the limit is %d", len(*p.Message), lim.MaxMessage)
	}
	e.Message = *p.Message
	if p.Timestamp != nil {
		if _, err := time.Parse(time.RFC3339Nano, *p.Timestamp); err != nil {
			return at("timestamp", "want an RFC 3339 time such as 2026-03-17T00:00:12Z, got %q", clip(*p.Timestamp))
		}
		e.Timestamp = *p.Timestamp
	}
	if p.Kind != nil {
		k := Kind(*p.Kind)
		switch k {
		case KindEnd, KindCancelled:
			return at("kind", "%s is written only by finish", k)
		case KindStart, KindMessage, KindCache, KindRetry, KindWarning, KindError:
			e.Kind = k
		default:
			return at("kind", "want one of start, message, cache, retry, warning, error")
		}
	}
	if p.Level != nil {
		if Level(*p.Level).Rank() < 0 {
			return at("level", "want one of debug, info, warn, error")
		}
		e.Level = Level(*p.Level)
	}
	if p.Phase != nil {
		if !validPhase(*p.Phase) {
			return at("phase", "want a lowercase word matching ^[a-z][a-z0-9_-]{0,63}$, got %q", clip(*p.Phase))
		}
		e.Phase = *p.Phase
	}
	if p.Source != nil {
		if len(*p.Source) > MaxSource {
			return at("source", "%d bytes, the limit is %d", len(*p.Source), MaxSource)
		}
		e.Source = p.Source
	}
	if err := pair(at, "step_index", p.StepIndex, "total_steps", p.TotalSteps); err != nil {
		return err
	}
	e.StepIndex, e.TotalSteps = p.StepIndex, p.TotalSteps
	if err := pair(at, "attempt", p.Attempt, "max_attempts", p.MaxAttempts); err != nil {
		return err
	}
	e.Attempt, e.MaxAttempts = p.Attempt, p.MaxAttempts
	var err error
	if e.CacheKind, err = oneOf(at, "cache_kind", p.CacheKind, cacheKinds); err != nil {
		return err
	}
	if e.CacheStatus, err = oneOf(at, "cache_status", p.CacheStatus, cacheStatuses); err != nil {
		return err
	}
	if e.CacheReason, err = oneOf(at, "cache_reason", p.CacheReason, cacheReasons); err != nil {
		return err
	}
	e.CacheSubject = p.CacheSubject
	if e.ErrorDetail, err = object(at, "error_detail", p.ErrorDetail); err != nil {
		return err
	}
	if e.Result, err = object(at, "result", p.Result); err != nil {
		return err
	}
	if e.ResultMetadata, err = object(at, "result_metadata", p.ResultMetadata); err != nil {
		return err
	}
	return nil
}

type atFunc func(field, format string, args ...any) error

// pair checks 1 ≤ n ≤ of for an (index, total) pair, each optional.
func pair(at atFunc, nName string, n *int64, ofName string, of *int64) error {
	if n != nil && *n < 1 {
		return at(nName, "want an integer ≥ 1, got %d", *n)
	}
	if of != nil && *of < 1 {
		return at(ofName, "want an integer ≥ 1, got %d", *of)
	}
	if n != nil && of != nil && *n > *of {
		return at(nName, "%d is greater than %s %d", *n, ofName, *of)
	}
	return nil
}

func oneOf(at atFunc, name string, v *string, allowed []string) (string, error) {
	if v == nil {
		return "", nil
	}
	for _, a := range allowed {
		if *v == a {
			return a, nil
		}
	}
	return "", at(name, "want one of %s", strings.Join(allowed, ", "))
}

// object accepts a JSON object (compacted, so it stays on one line) or null
// (treated as absent).
func object(at atFunc, name string, raw json.RawMessage) (json.RawMessage, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, at(name, "want a JSON object")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, at(name, "%s", jsonProblem(err))
	}
	return buf.Bytes(), nil
}

func clip(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// HashEntries fingerprints a batch as the producer sent it (after defaults,
// before timestamps are filled or secrets masked), so a retry can be told from
// a different batch at the same first_offset.
func HashEntries(entries []Entry) []byte {
	h := sha256.New()
	var buf []byte
	for i := range entries {
		buf = AppendEntryTail(buf[:0], &entries[i])
		h.Write(buf)
		h.Write([]byte{'\n'})
	}
	return h.Sum(nil)
}

// Timestamp formats t the way the server fills a missing timestamp.
func Timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// AppendEntry appends e's canonical JSON, on one line, with no newline.
func AppendEntry(dst []byte, e *Entry) []byte {
	dst = AppendEntryHead(dst, e.BuildID, e.TemplateID, e.Offset)
	return AppendEntryTail(dst, e)
}

// AppendEntryHead appends the server-set prefix of an entry's canonical JSON;
// AppendEntryTail completes it. The split lets the per-entry work happen
// before a store knows the offset, leaving only a copy under its lock.
func AppendEntryHead(dst []byte, buildID, templateID string, offset uint64) []byte {
	dst = append(dst, `{"build_id":`...)
	dst = appendString(dst, buildID)
	dst = append(dst, `,"template_id":`...)
	dst = appendString(dst, templateID)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendUint(dst, offset, 10)
	return dst
}

// AppendEntryTail appends everything after the offset, closing brace included.
func AppendEntryTail(dst []byte, e *Entry) []byte {
	dst = append(dst, `,"timestamp":`...)
	dst = appendString(dst, e.Timestamp)
	dst = append(dst, `,"kind":`...)
	dst = appendString(dst, string(e.Kind))
	dst = append(dst, `,"level":`...)
	dst = appendString(dst, string(e.Level))
	dst = append(dst, `,"message":`...)
	dst = appendString(dst, e.Message)
	if e.Phase != "" {
		dst = append(dst, `,"phase":`...)
		dst = appendString(dst, e.Phase)
	}
	if e.Source != nil {
		dst = append(dst, `,"source":`...)
		dst = appendString(dst, *e.Source)
	}
	dst = appendInt(dst, `,"step_index":`, e.StepIndex)
	dst = appendInt(dst, `,"total_steps":`, e.TotalSteps)
	dst = appendInt(dst, `,"attempt":`, e.Attempt)
	dst = appendInt(dst, `,"max_attempts":`, e.MaxAttempts)
	if e.CacheKind != "" {
		dst = append(dst, `,"cache_kind":`...)
		dst = appendString(dst, e.CacheKind)
	}
	if e.CacheStatus != "" {
		dst = append(dst, `,"cache_status":`...)
		dst = appendString(dst, e.CacheStatus)
	}
	if e.CacheReason != "" {
		dst = append(dst, `,"cache_reason":`...)
		dst = appendString(dst, e.CacheReason)
	}
	if e.CacheSubject != nil {
		dst = append(dst, `,"cache_subject":`...)
		dst = appendString(dst, *e.CacheSubject)
	}
	dst = appendRaw(dst, `,"error_detail":`, e.ErrorDetail)
	dst = appendRaw(dst, `,"result":`, e.Result)
	dst = appendRaw(dst, `,"result_metadata":`, e.ResultMetadata)
	return append(dst, '}')
}

func appendInt(dst []byte, key string, v *int64) []byte {
	if v == nil {
		return dst
	}
	return strconv.AppendInt(append(dst, key...), *v, 10)
}

func appendRaw(dst []byte, key string, v json.RawMessage) []byte {
	if len(v) == 0 {
		return dst
	}
	return append(append(dst, key...), v...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Control characters are escaped, so
// an entry never spans lines (SSE data lines and NDJSON depend on it); HTML
// characters are not, unlike encoding/json, since no output is HTML. Invalid
// UTF-8 becomes U+FFFD, as encoding/json does on decode.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON but break JavaScript line parsing
		// in some consoles; escaping them costs nothing here.
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendJSONString is appendString for other packages' hand-built JSON.
func AppendJSONString(dst []byte, s string) []byte { return appendString(dst, s) }

// StrictUnmarshal decodes a JSON request body into v, rejecting unknown
// fields and trailing data, with an *Error naming the field at fault.
func StrictUnmarshal(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return Errorf(EInvalid, "body: empty; want a JSON object")
	}
	if err := strictUnmarshal(body, v); err != nil {
		return Errorf(EInvalid, "body%s", fieldProblem(err))
	}
	return nil
}
