package buildlog

import (
	"encoding/json"
	"time"
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

// The values a cache entry's cache_kind, cache_status and cache_reason may
// take.
var (
	CacheKinds    = []string{"file_blob", "layer", "final_artifact"}
	CacheStatuses = []string{"hit", "miss", "stored", "bypass"}
	CacheReasons  = []string{"whole_build_skip_cache", "builder_cache_boundary", "force_upload", "missing_or_incompatible"}
)

// PhaseRule is the phase rule in words, for error messages.
const PhaseRule = "^[a-z][a-z0-9_-]{0,63}$"

// ValidPhase is the phase rule, PhaseRule, without a regexp: it runs for
// every entry of every append, and for every phase a reader filters on.
func ValidPhase(s string) bool {
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
// Its JSON tags follow the canonical field order; internal/wire's
// AppendEntry is the encoder readers are served by (its field table is
// held to this struct by a test), and encoding/json decodes its output
// into this.
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

// Limits bound what a producer may send. Zero fields take the defaults.
type Limits struct {
	MaxBatch   int // entries per batch
	MaxMessage int // bytes per message
}

// DefaultMaxBatch is the most entries one append may carry unless configured.
const DefaultMaxBatch = 10000

// WithDefaults is l with its zero fields set to the defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxBatch <= 0 {
		l.MaxBatch = DefaultMaxBatch
	}
	if l.MaxMessage <= 0 {
		l.MaxMessage = DefaultMaxMessage
	}
	return l
}

// Timestamp formats t the way the server fills a missing timestamp.
func Timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
