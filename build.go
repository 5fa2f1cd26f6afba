package buildlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"time"
)

// Status is where a build is in its life. The last four are terminal.
type Status string

const (
	StatusQueued    Status = "queued"
	StatusBuilding  Status = "building"
	StatusReady     Status = "ready"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
	StatusTimeout   Status = "timeout"
)

// Statuses lists every status.
var Statuses = []Status{StatusQueued, StatusBuilding, StatusReady, StatusFailed, StatusCancelled, StatusTimeout}

// Terminal reports whether no more entries can follow.
func (s Status) Terminal() bool {
	switch s {
	case StatusReady, StatusFailed, StatusCancelled, StatusTimeout:
		return true
	}
	return false
}

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	for _, v := range Statuses {
		if v == s {
			return true
		}
	}
	return false
}

// DefaultTeam owns builds made by an admin key that names no team.
const DefaultTeam = "default"

// Build is one run of building a template, with the state of its log.
// Optional fields are pointers or empty so that they stay absent in JSON.
type Build struct {
	ID          string          `json:"build_id"`
	TemplateID  string          `json:"template_id"`
	Team        string          `json:"team"`
	Namespace   string          `json:"namespace,omitempty"`
	Name        string          `json:"name,omitempty"`
	Version     string          `json:"version,omitempty"`
	TotalSteps  *int64          `json:"total_steps,omitempty"`
	MaxAttempts *int64          `json:"max_attempts,omitempty"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	Status      Status          `json:"status"`
	CreatedAt   time.Time       `json:"created_at"`
	StartedAt   *time.Time      `json:"started_at,omitempty"`
	FinishedAt  *time.Time      `json:"finished_at,omitempty"`
	UpdatedAt   time.Time       `json:"updated_at"`
	// NextOffset is the offset the next appended entry gets; since offsets
	// are dense from 0 it is also the number of entries.
	NextOffset uint64          `json:"next_offset"`
	EntryCount uint64          `json:"entry_count"`
	Result     json.RawMessage `json:"result,omitempty"`
	// Omitted is the range the size cap dropped, once anything was.
	Omitted *Omitted `json:"omitted,omitempty"`
	// KeptBytes is how much of the log the store keeps, as canonical
	// lines before compression: what the size cap counts.
	KeptBytes uint64 `json:"kept_bytes"`

	// LastPhase is the phase of the newest entry that had one; dialect B
	// labels a failed build's terminal frame with it.
	LastPhase string `json:"-"`
	// LastActivity is creation or the last append: the idle clock.
	LastActivity time.Time `json:"-"`
	// Secrets are masked out of messages at ingest; never returned.
	Secrets []string `json:"-"`
}

var (
	idRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)
)

// ValidID reports whether s may be a build, template, namespace or name id.
func ValidID(s string) bool { return idRE.MatchString(s) }

// ValidVersion reports whether s is semver MAJOR.MINOR.PATCH[-pre][+build].
func ValidVersion(s string) bool { return len(s) <= 128 && semverRE.MatchString(s) }

// NewBuild is a create-build request as a producer sends it.
type NewBuild struct {
	BuildID     *string         `json:"build_id"`
	Namespace   *string         `json:"namespace"`
	Name        *string         `json:"name"`
	Version     *string         `json:"version"`
	TotalSteps  *int64          `json:"total_steps"`
	MaxAttempts *int64          `json:"max_attempts"`
	Metadata    json.RawMessage `json:"metadata"`
	Team        *string         `json:"team"`
	Secrets     []string        `json:"secrets"`
}

// Build makes the queued build nb describes.
func (nb *NewBuild) Build(id, templateID, team string, now time.Time) *Build {
	b := &Build{
		ID: id, TemplateID: templateID, Team: team,
		TotalSteps: nb.TotalSteps, MaxAttempts: nb.MaxAttempts, Metadata: nb.Metadata,
		Status: StatusQueued, CreatedAt: now, UpdatedAt: now, LastActivity: now,
		Secrets: nb.Secrets,
	}
	if nb.Name != nil {
		b.Namespace, b.Name, b.Version = DefaultTeam, *nb.Name, *nb.Version
		if nb.Namespace != nil {
			b.Namespace = *nb.Namespace
		}
	}
	return b
}

// Finish is a request to end a build.
type Finish struct {
	Status         Status          `json:"status"`
	Message        *string         `json:"message"`
	Result         json.RawMessage `json:"result"`
	ResultMetadata json.RawMessage `json:"result_metadata"`
	ErrorDetail    json.RawMessage `json:"error_detail"`

	// Timestamp is the terminal entry's; the caller sets it.
	Timestamp string `json:"-"`
	// IdleBefore, when set, makes Finish conditional: it only ends a build
	// whose last activity is before it (the idle sweep), else conflict. This
	// keeps an append that races the sweep from being sealed behind.
	IdleBefore time.Time `json:"-"`
}

var finishMessages = map[Status]string{
	StatusReady:     "Build ready",
	StatusFailed:    "Build failed",
	StatusCancelled: "Build cancelled",
	StatusTimeout:   "Build timed out",
}

// Entry is the terminal entry f appends: kind cancelled for a cancelled
// build, end otherwise; level error unless ready.
func (f *Finish) Entry() Entry {
	e := Entry{Timestamp: f.Timestamp, Kind: KindEnd, Level: LevelError,
		Result: f.Result, ResultMetadata: f.ResultMetadata, ErrorDetail: f.ErrorDetail}
	switch f.Status {
	case StatusReady:
		e.Level = LevelInfo
	case StatusCancelled:
		e.Kind = KindCancelled
	}
	e.Message = finishMessages[f.Status]
	if f.Message != nil {
		e.Message = *f.Message
	}
	return e
}

// Batch is a validated append, encoded up to the offsets only the store can
// assign under its lock (internal/wire's NewBatch makes one, EncodeBatch
// completes it).
type Batch struct {
	// Tails are the entries' canonical JSON after the offset (see
	// internal/wire's AppendEntryTail).
	Tails [][]byte
	// FirstOffset, when set, is the offset the producer expects the batch
	// to start at; it makes the append an idempotent retry.
	FirstOffset *uint64
	// Hash fingerprints the entries as sent; set when FirstOffset is.
	Hash []byte
	// LastPhase is the phase of the last entry that has one, or "".
	LastPhase string
	// Terminal marks the batch Finish writes.
	Terminal bool

	// Created and KeyID, when set, are what the appender believed when it
	// let the batch in, checked again in the transaction that stores it: a
	// build whose CreatedAt differs is another build under a reused id
	// (not_found), and a key that no longer exists was revoked
	// (unauthorized). They are what lets the HTTP layer serve key and
	// build lookups from memory without ever appending on stale grounds.
	Created time.Time
	KeyID   string
}

// Size is the batch's weight in bytes for group-commit bounds: its
// entries' encoded tails, without the per-offset heads.
func (b *Batch) Size() int {
	n := 0
	for _, t := range b.Tails {
		n += len(t)
	}
	return n
}

// Len is the number of entries in the batch.
func (b *Batch) Len() int { return len(b.Tails) }

// Chunk is one stored batch: Count entries from offset First, as canonical
// JSON lines, each ending in '\n'.
type Chunk struct {
	First    uint64
	Count    int
	Data     []byte
	Terminal bool // the batch Finish wrote; nothing follows it
	// Notice marks an omission notice (see Omitted.Notice): one entry at
	// First standing for the dropped offsets before it, which no filter
	// hides. Readers go on at End, as after any chunk.
	Notice bool
}

// End is the offset after the chunk's last entry.
func (c Chunk) End() uint64 { return c.First + uint64(c.Count) }

// From returns the chunk's entries from offset off on (which must lie in
// [First, End]), without copying.
func (c Chunk) From(off uint64) Chunk {
	if off <= c.First {
		return c
	}
	skip := int(off - c.First)
	data := c.Data
	for range skip {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			data = nil
			break
		}
		data = data[i+1:]
	}
	return Chunk{First: off, Count: c.Count - skip, Data: data, Terminal: c.Terminal, Notice: c.Notice}
}

// Lines calls fn with each entry's offset and line (without the '\n').
// It stops early when fn returns false.
func (c Chunk) Lines(fn func(off uint64, line []byte) bool) {
	data := c.Data
	for off := c.First; len(data) > 0; off++ {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			i = len(data)
		}
		if !fn(off, data[:i]) {
			return
		}
		if i == len(data) {
			return
		}
		data = data[i+1:]
	}
}

// AppendResult is what an append answers: the offsets its entries got.
type AppendResult struct {
	FirstOffset uint64 `json:"first_offset"`
	NextOffset  uint64 `json:"next_offset"`
	// Chunk is the stored batch, for live fan-out; empty on a replayed retry.
	Chunk Chunk `json:"-"`
	// Replayed is true when the batch had already been stored (a retry).
	Replayed bool `json:"-"`
}

// ConflictAt is the error for an append whose first_offset is not next.
func ConflictAt(next uint64, format string, args ...any) error {
	e := Errorf(EConflict, format, args...)
	e.NextOffset = &next
	return e
}

// FormatOffset is strconv for offsets, for SSE ids.
func FormatOffset(off uint64) string { return strconv.FormatUint(off, 10) }

// The rules every store applies to an append and a finish, written once so
// that the stores cannot drift in what they check or what they say.

// ErrMaybeRetry is CheckAppend's answer for a batch that may be a retry of
// one already stored: the store looks up what it stored at the batch's
// first offset and answers with Replay.
var ErrMaybeRetry = errors.New("buildlog: maybe a retry of a stored batch")

// CheckAppend judges batch b for build id, whose status and next offset
// are as the store has them locked, before anything is stored: nil when b
// is to be stored at next; ErrMaybeRetry when b names an earlier first
// offset and carries a hash (a retry after a lost reply, answered as the
// first time even once the build has finished, since that batch did get
// in); a conflict with next when b names another offset; a conflict when
// the build is finished and its log sealed.
func CheckAppend(id string, status Status, next uint64, b *Batch) error {
	if fo := b.FirstOffset; fo != nil && *fo != next {
		if *fo < next && len(b.Hash) > 0 {
			return ErrMaybeRetry
		}
		return notNext(*fo, next)
	}
	if status.Terminal() {
		return Errorf(EConflict, "build %s is %s; its log is sealed", id, status)
	}
	return nil
}

func notNext(first, next uint64) error {
	return ConflictAt(next, "first_offset %d is not the build's next offset %d", first, next)
}

// Replay answers a batch CheckAppend found may be a retry, from what the
// store holds at its first offset (stored false when nothing starts
// there): as the first time when it is the same batch (count and hash),
// else a conflict with next.
func Replay(b *Batch, next uint64, stored bool, count int, hash []byte) (AppendResult, error) {
	first := *b.FirstOffset
	if stored && count == b.Len() && bytes.Equal(hash, b.Hash) {
		return AppendResult{FirstOffset: first, NextOffset: first + uint64(count), Replayed: true}, nil
	}
	return AppendResult{}, notNext(first, next)
}

// CheckFinish judges finish f of build b, as the store has it locked:
// done when b already has f's status (finishing again is a no-op); a
// conflict when b has another terminal status, or when f comes from the
// idle sweep (IdleBefore) and b was active since.
func CheckFinish(b *Build, f *Finish) (done bool, err error) {
	if b.Status.Terminal() {
		if b.Status == f.Status {
			return true, nil
		}
		return false, Errorf(EConflict, "build %s already finished as %s", b.ID, b.Status)
	}
	if !f.IdleBefore.IsZero() && !b.LastActivity.Before(f.IdleBefore) {
		return false, Errorf(EConflict, "build %s was active at %s, not idle", b.ID, b.LastActivity.UTC().Format(time.RFC3339Nano))
	}
	return false, nil
}
