package testkit

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"testing"

	"buildlog/internal/sse"
)

// ReadEvents reads events from rd to the end of its stream; a stream that
// breaks before its end fails the test.
func ReadEvents(t testing.TB, rd *sse.Reader) []sse.Event {
	t.Helper()
	evs, err := Events(rd)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// Events reads events from rd to the end of its stream. It reports a
// stream that breaks before its end, with the events that came, rather
// than failing, for readers on goroutines of their own.
func Events(rd *sse.Reader) ([]sse.Event, error) {
	var evs []sse.Event
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			return evs, nil
		}
		if err != nil {
			return evs, fmt.Errorf("stream broke after %d events: %w", len(evs), err)
		}
		evs = append(evs, ev)
	}
}

// FollowedEntry checks one event of a followed log whose entries the test
// wrote as "line <offset>": its id and its entry's offset must be want,
// and an entry other than the terminal one ("end") must say "line <want>".
// It returns the entry's kind. It reports rather than fails, as followers
// run on goroutines of their own.
func FollowedEntry(ev sse.Event, want uint64) (kind string, err error) {
	var e struct {
		Offset  uint64 `json:"offset"`
		Kind    string `json:"kind"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(ev.Data, &e); err != nil {
		return "", err
	}
	if ev.ID != strconv.FormatUint(want, 10) || e.Offset != want {
		return "", fmt.Errorf("got id %s offset %d, want %d", ev.ID, e.Offset, want)
	}
	if e.Kind != "end" && e.Message != "line "+strconv.FormatUint(want, 10) {
		return "", fmt.Errorf("offset %d carries %q", want, e.Message)
	}
	return e.Kind, nil
}
