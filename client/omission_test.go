package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"buildlog"
	"buildlog/client"
	"buildlog/internal/testkit"
)

// cappedServer is a real server whose store keeps 4,000 bytes of each
// log, the first 1,000 of them always.
func cappedServer(t *testing.T) (*server, *client.Client) {
	t.Helper()
	s := startServer(t, t.TempDir(), "", nil)
	s.store.SetLogCap(buildlog.LogCap{MaxBytes: 4000, HeadBytes: 1000}, nil)
	return s, s.client()
}

// appendN appends n batches of 3 entries at next, returning the new next.
func appendN(t *testing.T, c *client.Client, id string, next uint64, n int) uint64 {
	t.Helper()
	for range n {
		res, err := c.Append(context.Background(), id, next, msgs(3, int(next)))
		if err != nil {
			t.Fatal(err)
		}
		next = res.NextOffset
	}
	return next
}

// accountFor checks that got, read from offset from, yields every offset
// from there to end exactly once, as an entry (holding what was appended
// there) or within an omission notice, and returns the notices.
func accountFor(t *testing.T, got []buildlog.Entry, from, end uint64) []client.Omission {
	t.Helper()
	pos := from
	var notices []client.Omission
	for i, e := range got {
		if om, ok := client.OmissionOf(&e); ok {
			if om.From != pos || om.To != e.Offset || om.Entries != om.To-om.From+1 || om.Bytes == 0 {
				t.Fatalf("item %d: notice %+v at %d where %d was next", i, om, e.Offset, pos)
			}
			notices = append(notices, om)
			pos = om.To + 1
			continue
		}
		if e.Offset != pos {
			t.Fatalf("item %d: entry at %d where %d was next", i, e.Offset, pos)
		}
		if !e.Terminal() && e.Message != fmt.Sprintf("line %d", e.Offset) {
			t.Fatalf("entry %d holds %q", e.Offset, e.Message)
		}
		pos++
	}
	if pos != end {
		t.Fatalf("read from %d ends at %d, want %d", from, pos, end)
	}
	return notices
}

func collect(t *testing.T, c *client.Client, id string, o client.StreamOptions) []buildlog.Entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []buildlog.Entry
	for e, err := range c.Stream(ctx, id, o) {
		if err != nil {
			t.Fatalf("stream after %d entries: %v", len(out), err)
		}
		out = append(out, e)
	}
	return out
}

// Stream yields the notice as an entry OmissionOf recognises, with the
// build's dropped range; from a start inside the range, a notice for the
// part from there; after it, none. A warning with other result_metadata
// is no notice.
func TestStreamOmission(t *testing.T) {
	_, c := cappedServer(t)
	ctx := context.Background()
	if _, err := c.CreateBuild(ctx, "tmpl", client.NewBuild{BuildID: "tb_om"}); err != nil {
		t.Fatal(err)
	}
	next := appendN(t, c, "tb_om", 0, 60)
	w := buildlog.Entry{Kind: buildlog.KindWarning, Level: buildlog.LevelWarn, Message: fmt.Sprintf("line %d", next),
		ResultMetadata: []byte(`{"omitted_entries":3}`)}
	res, err := c.Append(ctx, "tb_om", next, []buildlog.Entry{w})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Finish(ctx, "tb_om", client.Finish{Status: buildlog.StatusReady})
	if err != nil {
		t.Fatal(err)
	}
	if b.Omitted == nil {
		t.Fatal("nothing omitted")
	}
	end := res.NextOffset + 1
	got := accountFor(t, collect(t, c, "tb_om", client.StreamOptions{}), 0, end)
	if len(got) != 1 || got[0].From != b.Omitted.From || got[0].To != b.Omitted.To ||
		got[0].Entries != b.Omitted.Entries || got[0].Bytes != b.Omitted.Bytes {
		t.Fatalf("notices %+v, the build's range %+v", got, b.Omitted)
	}
	inside := b.Omitted.From + 4
	got = accountFor(t, collect(t, c, "tb_om", client.StreamOptions{From: inside}), inside, end)
	if len(got) != 1 || got[0].From != inside {
		t.Fatalf("from inside the range: notices %+v", got)
	}
	if got := accountFor(t, collect(t, c, "tb_om", client.StreamOptions{From: b.Omitted.To + 1}), b.Omitted.To+1, end); len(got) != 0 {
		t.Fatalf("from after the range: notices %+v", got)
	}
}

// A filtered Stream still yields the notice.
func TestStreamOmissionFiltered(t *testing.T) {
	_, c := cappedServer(t)
	ctx := context.Background()
	if _, err := c.CreateBuild(ctx, "tmpl", client.NewBuild{BuildID: "tb_omf"}); err != nil {
		t.Fatal(err)
	}
	appendN(t, c, "tb_omf", 0, 60)
	if _, err := c.Finish(ctx, "tb_omf", client.Finish{Status: buildlog.StatusFailed}); err != nil {
		t.Fatal(err)
	}
	got := collect(t, c, "tb_omf", client.StreamOptions{Level: buildlog.LevelError})
	if len(got) != 2 || !got[1].Terminal() {
		t.Fatalf("level=error: %+v", got)
	}
	if _, ok := client.OmissionOf(&got[0]); !ok {
		t.Fatalf("level=error: first is %+v, not the notice", got[0])
	}
}

// A follower through a connection that is cut while the range grows past
// it, three times:
// each reconnect resumes after the last offset yielded, a notice's
// included, meets a new notice for what was dropped meanwhile, and every
// offset is yielded, as an entry or within a notice, exactly once. A new
// Stream from after a notice works the same.
func TestStreamOmissionResume(t *testing.T) {
	s, c := cappedServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.CreateBuild(ctx, "tmpl", client.NewBuild{BuildID: "tb_omr"}); err != nil {
		t.Fatal(err)
	}
	next := appendN(t, c, "tb_omr", 0, 40)
	p := testkit.NewProxy(t, s.addr)
	pc := proxyClient(p, 10*time.Millisecond, 50*time.Millisecond)

	var got []buildlog.Entry
	reconnects, grown := 0, 0
	o := client.StreamOptions{Follow: true, OnReconnect: func(error, time.Duration) { reconnects++ }}
	for e, err := range pc.Stream(ctx, "tb_omr", o) {
		if err != nil {
			t.Fatalf("after %d entries: %v", len(got), err)
		}
		got = append(got, e)
		if e.Terminal() || e.Offset+1 != next {
			continue
		}
		// Caught up. Cut the follower off, append so much that where it
		// stands is dropped, and let it reconnect: it resumes inside
		// the grown range.
		if grown < 3 {
			grown++
			p.Refuse(true)
			next = appendN(t, c, "tb_omr", next, 20)
			p.Refuse(false)
			continue
		}
		if _, err := c.Finish(ctx, "tb_omr", client.Finish{Status: buildlog.StatusReady}); err != nil {
			t.Fatal(err)
		}
	}
	notices := accountFor(t, got, 0, next+1)
	if len(notices) < 4 || reconnects < 3 {
		t.Fatalf("%d notices over %d reconnects into a growing range; want one per part", len(notices), reconnects)
	}
	// A new Stream from just after the first notice meets the range as it
	// now is: one notice for the rest of it.
	from := notices[0].To + 1
	again := accountFor(t, collect(t, c, "tb_omr", client.StreamOptions{From: from}), from, next+1)
	if len(again) != 1 || again[0].From != from {
		t.Fatalf("resume after the first notice: %+v", again)
	}
}
