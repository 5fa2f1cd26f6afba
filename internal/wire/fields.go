// Package wire is the JSON of buildlog: the canonical entry line readers
// are served and stores keep (AppendEntry, EncodeBatch), the append body
// producers send and its validation (DecodeBatch), the other request
// bodies (DecodeNewBuild, DecodeFinish, DecodeNewWebhook), what a filter
// reads of a stored line without decoding it (ScanLine), dialect C's text
// line (AppendCLine), and the Go client's form of an append (AppendBody).
//
// The root package names what an entry is (buildlog.Entry and its rules);
// this package is the one place that knows how one is written. fields
// lists the line's fields once, in the order they are written; the tests
// hold every part of the codec to it, and buildlog.Entry too, so a field
// added to one and not the other fails them.
package wire

// fieldKind is how a field is written and when it is left out.
type fieldKind int

const (
	// kindServer: set by the server, always written; a producer's
	// value is accepted and ignored.
	kindServer fieldKind = iota
	// kindString: a string, always written; a producer may leave it out
	// (the server fills it: its clock, kind message, level info), except
	// the message, which it must send.
	kindString
	// kindOptString: a string left out when empty.
	kindOptString
	// kindPtrString: a *string left out when nil; "" is a value.
	kindPtrString
	// kindPtrInt: an *int64 left out when nil.
	kindPtrInt
	// kindObject: a JSON object kept as compacted raw bytes, left out
	// when empty; null from a producer is absent.
	kindObject
)

// field is one member of the canonical line.
type field struct {
	name string // buildlog.Entry's Go field
	key  string // JSON key, as buildlog.Entry's tag names it
	kind fieldKind
}

// fields is the canonical line, in the order it is written. The scanners
// (ScanLine, AppendCLine) rely on that order up to the source: build_id,
// template_id, offset, timestamp, kind, level, message, phase, source.
var fields = []field{
	{"BuildID", "build_id", kindServer},
	{"TemplateID", "template_id", kindServer},
	{"Offset", "offset", kindServer},
	{"Timestamp", "timestamp", kindString},
	{"Kind", "kind", kindString},
	{"Level", "level", kindString},
	{"Message", "message", kindString},
	{"Phase", "phase", kindOptString},
	{"Source", "source", kindPtrString},
	{"StepIndex", "step_index", kindPtrInt},
	{"TotalSteps", "total_steps", kindPtrInt},
	{"Attempt", "attempt", kindPtrInt},
	{"MaxAttempts", "max_attempts", kindPtrInt},
	{"CacheKind", "cache_kind", kindOptString},
	{"CacheStatus", "cache_status", kindOptString},
	{"CacheReason", "cache_reason", kindOptString},
	{"CacheSubject", "cache_subject", kindPtrString},
	{"ErrorDetail", "error_detail", kindObject},
	{"Result", "result", kindObject},
	{"ResultMetadata", "result_metadata", kindObject},
}
