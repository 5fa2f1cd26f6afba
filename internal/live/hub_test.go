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
