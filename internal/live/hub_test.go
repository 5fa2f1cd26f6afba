package live

import (
	"testing"
	"time"

	"buildlog"
)

func chunk(first uint64) buildlog.Chunk {
	return buildlog.Chunk{First: first, Count: 1, Data: []byte(`{"offset":0}`)}
}

// Commits that come closer together than coalesce wake the followers once
// for all of them, and no commit goes without a wake-up: memory has every
// commit at once, and the gathered wake-up comes within coalesce.
func TestWakeUpsGathered(t *testing.T) {
	h := New(0)
	f := h.Follow("b")
	defer f.Close()
	const commits = 1000
	start := time.Now()
	wake := f.Wait()
	for i := range commits {
		h.Publish("b", chunk(uint64(i)))
	}
	elapsed := time.Since(start)
	// However slow the machine, wake-ups are at least coalesce apart.
	f.t.mu.RLock()
	wakes := f.t.wakes
	f.t.mu.RUnlock()
	if limit := int(elapsed/coalesce) + 1; wakes > limit {
		t.Fatalf("%d commits in %v woke the followers %d times, want at most %d", commits, elapsed, wakes, limit)
	}
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up after the first commit")
	}
	// The last commit's wake-up may still be due: it must come.
	deadline := time.After(10 * time.Second)
	for {
		w := f.Wait()
		f.t.mu.RLock()
		due := f.t.due
		f.t.mu.RUnlock()
		if !due {
			break
		}
		select {
		case <-w:
		case <-deadline:
			t.Fatal("a gathered wake-up never came")
		}
	}
	chunks, ok := f.Read(0)
	if !ok || len(chunks) != commits || chunks[len(chunks)-1].First != commits-1 {
		t.Fatalf("memory holds %d chunks (ok %v), want %d", len(chunks), ok, commits)
	}
}

// A notice gathered with a commit still drops memory and wakes.
func TestNotifyGathered(t *testing.T) {
	h := New(0)
	f := h.Follow("b")
	defer f.Close()
	h.Publish("b", chunk(0))
	w := f.Wait()
	h.Notify("b")
	if _, ok := f.Read(0); ok {
		t.Fatal("memory still answers after a notice")
	}
	select {
	case <-w:
	case <-time.After(10 * time.Second):
		t.Fatal("a notice did not wake the follower")
	}
}

// OnWake calls back at the wake-up it was given, once; not for a wake
// channel that has closed already; not after StopWake or Close.
func TestOnWake(t *testing.T) {
	h := New(0)
	f := h.Follow("b")
	defer f.Close()
	called := make(chan struct{}, 4)
	w := f.Wait()
	if !f.OnWake(w, func() { called <- struct{}{} }) {
		t.Fatal("OnWake refused a current wake channel")
	}
	h.Publish("b", chunk(0))
	select {
	case <-called:
	case <-time.After(10 * time.Second):
		t.Fatal("OnWake's fn was not called at the commit")
	}
	if f.OnWake(w, func() { called <- struct{}{} }) {
		t.Fatal("OnWake accepted a wake channel that has closed")
	}
	// Stopped, then closed: a commit calls neither.
	w = f.Wait()
	f.OnWake(w, func() { called <- struct{}{} })
	f.StopWake()
	g := h.Follow("b")
	g.OnWake(g.Wait(), func() { called <- struct{}{} })
	g.Close()
	w = f.Wait()
	h.Publish("b", chunk(1))
	select {
	case <-w:
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up")
	}
	select {
	case <-called:
		t.Fatal("a stopped or closed follower was called")
	case <-time.After(50 * time.Millisecond):
	}
}
