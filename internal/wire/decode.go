package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"buildlog"
)

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

// DecodeBatch parses an append body: a JSON array of entries, an object
// {"entries":[...],"first_offset":N}, or (ndjson) one entry per line.
// It validates every entry and returns them with defaults applied, except the
// timestamp, which the server fills. firstOffset is nil unless the body names one.
// Errors are *Error with code invalid or too_large, naming entries[i].field.
func DecodeBatch(body []byte, ndjson bool, lim buildlog.Limits) (entries []buildlog.Entry, firstOffset *uint64, err error) {
	lim = lim.WithDefaults()
	// The everyday body takes a fast path; whatever it does not accept
	// (errors included) is decided below, so both agree by construction.
	if entries, firstOffset, ok := decodeFast(body, ndjson, lim); ok {
		return entries, firstOffset, nil
	}
	return decodeGeneral(body, ndjson, lim)
}

// decodeGeneral is DecodeBatch on encoding/json, for every body.
func decodeGeneral(body []byte, ndjson bool, lim buildlog.Limits) (entries []buildlog.Entry, firstOffset *uint64, err error) {
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
		return nil, nil, buildlog.Errorf(buildlog.EInvalid, "entries: a batch needs at least one entry")
	}
	entries = make([]buildlog.Entry, len(raws))
	for i, raw := range raws {
		if err := decodeEntry(raw, i, lim, &entries[i]); err != nil {
			return nil, nil, err
		}
	}
	return entries, firstOffset, nil
}

func tooMany(n, max int) error {
	return &buildlog.Error{Code: buildlog.ETooLarge, Message: fmt.Sprintf("entries: %d entries in one batch, the limit is %d", n, max)}
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
		return nil, nil, buildlog.Errorf(buildlog.EInvalid, "body: empty; want a JSON array of entries or {\"entries\":[...]}")
	}
	var raws []json.RawMessage
	var first *uint64
	switch body[0] {
	case '[':
		if err := json.Unmarshal(body, &raws); err != nil {
			return nil, nil, buildlog.Errorf(buildlog.EInvalid, "body: %s", jsonProblem(err))
		}
	case '{':
		var obj struct {
			Entries     *[]json.RawMessage `json:"entries"`
			FirstOffset *uint64            `json:"first_offset"`
		}
		if err := strictUnmarshal(body, &obj); err != nil {
			return nil, nil, buildlog.Errorf(buildlog.EInvalid, "body%s", fieldProblem(err))
		}
		if obj.Entries == nil {
			return nil, nil, buildlog.Errorf(buildlog.EInvalid, "entries: required")
		}
		raws, first = *obj.Entries, obj.FirstOffset
	default:
		return nil, nil, buildlog.Errorf(buildlog.EInvalid, "body: want a JSON array of entries or {\"entries\":[...]}")
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
	return exactKeys(data, reflect.TypeOf(v))
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
	if f, ok := strings.CutPrefix(msg, `json: duplicate field "`); ok {
		return "." + strings.TrimSuffix(f, `"`) + ": given more than once"
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

func decodeEntry(raw json.RawMessage, i int, lim buildlog.Limits, e *buildlog.Entry) error {
	if len(raw) == 0 || raw[0] != '{' {
		return buildlog.Errorf(buildlog.EInvalid, "entries[%d]: want a JSON object", i)
	}
	var p producerEntry
	if err := strictUnmarshal(raw, &p); err != nil {
		return buildlog.Errorf(buildlog.EInvalid, "entries[%d]%s", i, fieldProblem(err))
	}
	return checkEntry(&p, i, lim, e)
}

// validTimestamp reports whether time.Parse takes s as RFC 3339. The form
// producers send, "2026-03-17T00:00:12.345678Z", is checked here without
// building a time.Time (a tenth of decoding an entry); anything else is
// left to time.Parse, so what is accepted stays exactly what it accepts
// (FuzzValidTimestamp).
func validTimestamp(s string) bool {
	if utcTimestamp(s) {
		return true
	}
	_, err := time.Parse(time.RFC3339Nano, s)
	return err == nil
}

// utcTimestamp reports whether s is YYYY-MM-DDTHH:MM:SS, a fraction of
// any number of digits or none, and Z, with every field in range: a subset
// of what time.Parse takes.
func utcTimestamp(s string) bool {
	if len(s) < len("2006-01-02T15:04:05Z") || s[len(s)-1] != 'Z' ||
		s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return false
	}
	num := func(i, j int) int {
		n := 0
		for _, c := range []byte(s[i:j]) {
			if c < '0' || c > '9' {
				return -1
			}
			n = n*10 + int(c-'0')
		}
		return n
	}
	year, month, day := num(0, 4), num(5, 7), num(8, 10)
	hour, minute, sec := num(11, 13), num(14, 16), num(17, 19)
	if year < 0 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 ||
		minute < 0 || minute > 59 || sec < 0 || sec > 59 {
		return false
	}
	days := [13]int{0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}[month]
	if month == 2 && year%4 == 0 && (year%100 != 0 || year%400 == 0) {
		days = 29
	}
	if day > days {
		return false
	}
	frac := s[19 : len(s)-1]
	if frac == "" {
		return true
	}
	if len(frac) < 2 || frac[0] != '.' {
		return false
	}
	for _, c := range []byte(frac[1:]) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// checkEntry validates a decoded producer entry and fills e from it.
func checkEntry(p *producerEntry, i int, lim buildlog.Limits, e *buildlog.Entry) error {
	at := func(field, format string, args ...any) error {
		return buildlog.Errorf(buildlog.EInvalid, "entries[%d].%s: %s", i, field, fmt.Sprintf(format, args...))
	}
	*e = buildlog.Entry{Kind: buildlog.KindMessage, Level: buildlog.LevelInfo}
	if p.Message == nil {
		return at("message", "required")
	}
	if len(*p.Message) > lim.MaxMessage {
		return at("message", "%d bytes, the limit is %d", len(*p.Message), lim.MaxMessage)
	}
	e.Message = *p.Message
	if p.Timestamp != nil {
		if !validTimestamp(*p.Timestamp) {
			return at("timestamp", "want an RFC 3339 time such as 2026-03-17T00:00:12Z, got %q", clip(*p.Timestamp))
		}
		e.Timestamp = *p.Timestamp
	}
	if p.Kind != nil {
		k := buildlog.Kind(*p.Kind)
		switch k {
		case buildlog.KindEnd, buildlog.KindCancelled:
			return at("kind", "%s is written only by finish", k)
		case buildlog.KindStart, buildlog.KindMessage, buildlog.KindCache, buildlog.KindRetry, buildlog.KindWarning, buildlog.KindError:
			e.Kind = k
		default:
			return at("kind", "want one of start, message, cache, retry, warning, error")
		}
	}
	if p.Level != nil {
		if buildlog.Level(*p.Level).Rank() < 0 {
			return at("level", "want one of debug, info, warn, error")
		}
		e.Level = buildlog.Level(*p.Level)
	}
	if p.Phase != nil {
		if !buildlog.ValidPhase(*p.Phase) {
			return at("phase", "want a lowercase word matching "+buildlog.PhaseRule+", got %q", clip(*p.Phase))
		}
		e.Phase = *p.Phase
	}
	if p.Source != nil {
		if len(*p.Source) > buildlog.MaxSource {
			return at("source", "%d bytes, the limit is %d", len(*p.Source), buildlog.MaxSource)
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
	if e.CacheKind, err = oneOf(at, "cache_kind", p.CacheKind, buildlog.CacheKinds); err != nil {
		return err
	}
	if e.CacheStatus, err = oneOf(at, "cache_status", p.CacheStatus, buildlog.CacheStatuses); err != nil {
		return err
	}
	if e.CacheReason, err = oneOf(at, "cache_reason", p.CacheReason, buildlog.CacheReasons); err != nil {
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

// StrictUnmarshal decodes a JSON request body into v, rejecting unknown
// fields and trailing data, with an *Error naming the field at fault.
func StrictUnmarshal(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return buildlog.Errorf(buildlog.EInvalid, "body: empty; want a JSON object")
	}
	if err := strictUnmarshal(body, v); err != nil {
		return buildlog.Errorf(buildlog.EInvalid, "body%s", fieldProblem(err))
	}
	return nil
}
