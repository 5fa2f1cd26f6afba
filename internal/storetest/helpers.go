// Package storetest is the conformance suite every buildlog.Store passes:
// each implementation's test calls Run with a factory for fresh stores.
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/wire"
)

// T0 is the suite's epoch. Every time the suite passes a store is T0 plus
// whole microseconds, since PostgreSQL keeps no finer precision.
var T0 = time.Date(2026, 3, 17, 0, 0, 0, 0, time.UTC)

// At returns T0 plus sec seconds and a few microseconds, so that a store
// dropping sub-second precision fails the suite.
func At(sec int) time.Time {
	return T0.Add(time.Duration(sec)*time.Second + 123456*time.Microsecond)
}

// Timestamp is the entry timestamp the helpers use. It is fixed, not now, so
// that encodings are reproducible.
const Timestamp = "2026-03-17T00:00:12.5Z"

// NewBuild returns a queued build of template "tmpl_1" owned by team "acme",
// created (and last active) at created.
func NewBuild(id string, created time.Time) *buildlog.Build {
	return &buildlog.Build{
		ID: id, TemplateID: "tmpl_1", Team: "acme",
		Status:    buildlog.StatusQueued,
		CreatedAt: created, UpdatedAt: created, LastActivity: created,
	}
}

// Entries returns one message entry per msg, stamped with Timestamp.
func Entries(msgs ...string) []buildlog.Entry {
	es := make([]buildlog.Entry, len(msgs))
	for i, m := range msgs {
		es[i] = buildlog.Entry{Timestamp: Timestamp, Kind: buildlog.KindMessage, Level: buildlog.LevelInfo, Message: m}
	}
	return es
}

// BatchOf returns a plain (non-idempotent) batch of one entry per msg.
func BatchOf(msgs ...string) *buildlog.Batch {
	return wire.NewBatch(Entries(msgs...), nil, nil)
}

// RetryBatchOf returns an idempotent batch expected at offset first, hashed
// as the HTTP layer hashes what a producer sent.
func RetryBatchOf(first uint64, msgs ...string) *buildlog.Batch {
	es := Entries(msgs...)
	return wire.NewBatch(es, &first, wire.HashEntries(es))
}

// Messages returns n distinct messages prefixed by prefix.
func Messages(prefix string, n int) []string {
	ms := make([]string, n)
	for i := range ms {
		ms[i] = fmt.Sprintf("%s line %d", prefix, i)
	}
	return ms
}

// ReadAll pages through a build's whole log with ReadLog and returns its
// chunks in order, failing t unless they tile the offsets densely from 0.
func ReadAll(t *testing.T, s buildlog.Store, buildID string) []buildlog.Chunk {
	t.Helper()
	var all []buildlog.Chunk
	var next uint64
	for {
		chunks, err := s.ReadLog(t.Context(), buildID, next, 1<<20)
		if err != nil {
			t.Fatalf("ReadLog(%q, %d): %v", buildID, next, err)
		}
		if len(chunks) == 0 {
			return all
		}
		for _, c := range chunks {
			if c.First != next {
				t.Fatalf("ReadLog(%q): chunk starts at %d, want %d", buildID, c.First, next)
			}
			if c.Count <= 0 {
				t.Fatalf("ReadLog(%q): chunk at %d has count %d", buildID, c.First, c.Count)
			}
			next = c.End()
			all = append(all, c)
		}
	}
}

// Lines splits chunks into their lines, one per offset, checking that each
// chunk holds exactly Count lines.
func Lines(t *testing.T, chunks []buildlog.Chunk) []string {
	t.Helper()
	var lines []string
	for _, c := range chunks {
		n := 0
		c.Lines(func(off uint64, line []byte) bool {
			lines = append(lines, string(line))
			n++
			return true
		})
		if n != c.Count || (len(c.Data) > 0 && c.Data[len(c.Data)-1] != '\n') {
			t.Errorf("chunk at %d: %d lines (data ends %q), want Count %d newline-terminated", c.First, n, tail(c.Data), c.Count)
		}
	}
	return lines
}

func tail(b []byte) []byte {
	if len(b) > 8 {
		return b[len(b)-8:]
	}
	return b
}

// wantCode fails t unless err is a *buildlog.Error with code.
func wantCode(t *testing.T, err error, code string, what string) {
	t.Helper()
	if got := buildlog.ErrorCode(err); got != code {
		t.Fatalf("%s: error %v (code %q), want code %q", what, err, got, code)
	}
}

// wantConflictAt fails t unless err is a conflict naming next as the
// build's next offset.
func wantConflictAt(t *testing.T, err error, next uint64, what string) {
	t.Helper()
	wantCode(t, err, buildlog.EConflict, what)
	var e *buildlog.Error
	errors.As(err, &e)
	if e.NextOffset == nil {
		t.Fatalf("%s: conflict without NextOffset, want %d", what, next)
	}
	if *e.NextOffset != next {
		t.Fatalf("%s: conflict NextOffset = %d, want %d", what, *e.NextOffset, next)
	}
}

// diffBuild lists the fields in which got differs from want; times compare
// with Equal and must be in UTC.
func diffBuild(got, want *buildlog.Build) []string {
	var d []string
	str := func(name, g, w string) {
		if g != w {
			d = append(d, fmt.Sprintf("%s = %q, want %q", name, g, w))
		}
	}
	str("ID", got.ID, want.ID)
	str("TemplateID", got.TemplateID, want.TemplateID)
	str("Team", got.Team, want.Team)
	str("Namespace", got.Namespace, want.Namespace)
	str("Name", got.Name, want.Name)
	str("Version", got.Version, want.Version)
	str("Status", string(got.Status), string(want.Status))
	str("LastPhase", got.LastPhase, want.LastPhase)
	d = append(d, diffInt("TotalSteps", got.TotalSteps, want.TotalSteps)...)
	d = append(d, diffInt("MaxAttempts", got.MaxAttempts, want.MaxAttempts)...)
	if !bytes.Equal(got.Metadata, want.Metadata) {
		d = append(d, fmt.Sprintf("Metadata = %q, want %q", got.Metadata, want.Metadata))
	}
	if !bytes.Equal(got.Result, want.Result) {
		d = append(d, fmt.Sprintf("Result = %q, want %q", got.Result, want.Result))
	}
	if !slices.Equal(got.Secrets, want.Secrets) {
		d = append(d, fmt.Sprintf("Secrets = %q, want %q", got.Secrets, want.Secrets))
	}
	if got.NextOffset != want.NextOffset {
		d = append(d, fmt.Sprintf("NextOffset = %d, want %d", got.NextOffset, want.NextOffset))
	}
	if got.EntryCount != want.EntryCount {
		d = append(d, fmt.Sprintf("EntryCount = %d, want %d", got.EntryCount, want.EntryCount))
	}
	d = append(d, diffTime("CreatedAt", got.CreatedAt, want.CreatedAt)...)
	d = append(d, diffTime("UpdatedAt", got.UpdatedAt, want.UpdatedAt)...)
	d = append(d, diffTime("LastActivity", got.LastActivity, want.LastActivity)...)
	d = append(d, diffTimePtr("StartedAt", got.StartedAt, want.StartedAt)...)
	d = append(d, diffTimePtr("FinishedAt", got.FinishedAt, want.FinishedAt)...)
	return d
}

func diffInt(name string, got, want *int64) []string {
	switch {
	case got == nil && want == nil:
		return nil
	case got == nil || want == nil:
		return []string{fmt.Sprintf("%s = %s, want %s", name, fmtPtr(got), fmtPtr(want))}
	case *got != *want:
		return []string{fmt.Sprintf("%s = %d, want %d", name, *got, *want)}
	}
	return nil
}

func fmtPtr[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

func diffTime(name string, got, want time.Time) []string {
	if !got.Equal(want) {
		return []string{fmt.Sprintf("%s = %v, want %v", name, got, want)}
	}
	if !got.IsZero() && got.Location() != time.UTC {
		return []string{fmt.Sprintf("%s is in %v, want UTC", name, got.Location())}
	}
	return nil
}

func diffTimePtr(name string, got, want *time.Time) []string {
	switch {
	case got == nil && want == nil:
		return nil
	case got == nil || want == nil:
		return []string{fmt.Sprintf("%s = %s, want %s", name, fmtPtr(got), fmtPtr(want))}
	}
	return diffTime(name, *got, *want)
}

// wantBuild fails t unless got matches want field by field.
func wantBuild(t *testing.T, got, want *buildlog.Build, what string) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: nil build", what)
	}
	for _, d := range diffBuild(got, want) {
		t.Errorf("%s: %s", what, d)
	}
}

// getBuild fetches a build that must exist.
func getBuild(t *testing.T, s buildlog.Store, id string) *buildlog.Build {
	t.Helper()
	b, err := s.Build(t.Context(), id)
	if err != nil {
		t.Fatalf("Build(%q): %v", id, err)
	}
	return b
}

// create stores b, which must not exist.
func create(t *testing.T, s buildlog.Store, b *buildlog.Build) {
	t.Helper()
	if err := s.CreateBuild(t.Context(), b); err != nil {
		t.Fatalf("CreateBuild(%q): %v", b.ID, err)
	}
}

// appendOK appends b, which must succeed, and returns the result.
func appendOK(t *testing.T, s buildlog.Store, id string, b *buildlog.Batch, now time.Time) buildlog.AppendResult {
	t.Helper()
	res, err := s.Append(t.Context(), id, b, now)
	if err != nil {
		t.Fatalf("Append(%q, %d entries): %v", id, b.Len(), err)
	}
	return res
}

// finishOK finishes the build with status at now, which must succeed.
func finishOK(t *testing.T, s buildlog.Store, id string, status buildlog.Status, now time.Time) (*buildlog.Build, buildlog.Chunk) {
	t.Helper()
	b, c, err := s.Finish(t.Context(), id, &buildlog.Finish{Status: status, Timestamp: Timestamp}, now)
	if err != nil {
		t.Fatalf("Finish(%q, %s): %v", id, status, err)
	}
	return b, c
}

// wantChunk fails t unless got is exactly want.
func wantChunk(t *testing.T, got, want buildlog.Chunk, what string) {
	t.Helper()
	if got.First != want.First || got.Count != want.Count || got.Terminal != want.Terminal {
		t.Errorf("%s: chunk {First %d, Count %d, Terminal %v}, want {First %d, Count %d, Terminal %v}",
			what, got.First, got.Count, got.Terminal, want.First, want.Count, want.Terminal)
	}
	if !bytes.Equal(got.Data, want.Data) {
		t.Errorf("%s: chunk data\n%s\nwant\n%s", what, got.Data, want.Data)
	}
}

// ids returns the builds' ids, in order.
func ids(bs []*buildlog.Build) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.ID
	}
	return out
}

func ptr[T any](v T) *T { return &v }
