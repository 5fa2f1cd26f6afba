package storetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"buildlog"
)

// Grouper is implemented by stores that commit appends in groups; the
// suite uses it to check that groups did form under concurrent appends.
type Grouper interface {
	GroupStats() (groups, requests int64)
}

// testFleet is many producers on many builds at once, the load group
// commit is for. Each producer sends idempotent batches at the offsets it
// expects, and now and then a retry of its previous batch (which must be
// answered as the first time) and a batch at a stale offset (which must
// fail alone, with the build's next offset). Every log must come out
// dense, every acknowledged batch stored exactly once where it was
// acknowledged, and nothing else.
func testFleet(t *testing.T, s buildlog.Store) {
	const (
		builds  = 48
		batches = 25
	)
	g0, r0 := groupStats(s)
	bs := make([]*buildlog.Build, builds)
	for i := range bs {
		bs[i] = NewBuild(fmt.Sprintf("fleet-%02d", i), At(0))
		bs[i].TemplateID = fmt.Sprintf("tmpl_%d", i%5)
		create(t, s, bs[i])
	}
	done := make([][]appended, builds)
	var wg sync.WaitGroup
	for w := range builds {
		wg.Go(func() {
			id := bs[w].ID
			var next uint64
			var prev *buildlog.Batch
			for i := range batches {
				if i%5 == 4 && prev != nil {
					res, err := s.Append(t.Context(), id, prev, At(1+i))
					if err != nil || !res.Replayed || res.FirstOffset != *prev.FirstOffset || res.NextOffset != next {
						t.Errorf("%s: retry of the batch at %d = %+v, %v; want it answered as the first time", id, *prev.FirstOffset, res, err)
						return
					}
					_, err = s.Append(t.Context(), id, RetryBatchOf(next-1, "stale"), At(1+i))
					if code := buildlog.ErrorCode(err); code != buildlog.EConflict {
						t.Errorf("%s: batch at stale offset %d: %v, want conflict", id, next-1, err)
						return
					}
					wantConflictAt(t, err, next, id+": stale batch")
				}
				b := RetryBatchOf(next, Messages(fmt.Sprintf("%s b%d", id, i), 1+(w+i)%10)...)
				res, err := s.Append(t.Context(), id, b, At(1+i))
				if err != nil {
					t.Errorf("%s: batch %d: %v", id, i, err)
					return
				}
				if res.Replayed || res.FirstOffset != next {
					t.Errorf("%s: batch %d answered %+v, want stored at %d", id, i, res, next)
					return
				}
				done[w] = append(done[w], appended{b, res})
				next, prev = res.NextOffset, b
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for w, b := range bs {
		checkAppended(t, s, b, done[w])
	}
	if g1, r1 := groupStats(s); g1 >= 0 {
		groups, reqs := g1-g0, r1-r0
		t.Logf("%d requests in %d groups", reqs, groups)
		if reqs <= groups {
			t.Errorf("%d requests in %d groups: no group held more than one request", reqs, groups)
		}
	}
}

func groupStats(s buildlog.Store) (groups, requests int64) {
	if g, ok := s.(Grouper); ok {
		return g.GroupStats()
	}
	return -1, -1
}

// testGroupDuplicates sends the same idempotent batch from several
// goroutines at once, so that copies meet in one group: exactly one is
// stored and every other copy is answered as a replay of it.
func testGroupDuplicates(t *testing.T, s buildlog.Store) {
	const id = "dups"
	create(t, s, NewBuild(id, At(0)))
	var next uint64
	for round := range 20 {
		msgs := Messages(fmt.Sprintf("round %d", round), 3)
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			stored   int
			replayed int
		)
		for range 6 {
			wg.Go(func() {
				res, err := s.Append(t.Context(), id, RetryBatchOf(next, msgs...), At(1+round))
				if err != nil {
					t.Errorf("round %d: %v", round, err)
					return
				}
				if res.FirstOffset != next || res.NextOffset != next+3 {
					t.Errorf("round %d: answered [%d, %d), want [%d, %d)", round, res.FirstOffset, res.NextOffset, next, next+3)
				}
				mu.Lock()
				if res.Replayed {
					replayed++
				} else {
					stored++
				}
				mu.Unlock()
			})
		}
		wg.Wait()
		if stored != 1 || replayed != 5 {
			t.Fatalf("round %d: %d copies stored, %d replayed; want 1 and 5", round, stored, replayed)
		}
		next += 3
	}
	if got := Lines(t, ReadAll(t, s, id)); len(got) != int(next) {
		t.Errorf("%d entries stored, want %d", len(got), next)
	}
}

// testGroupSealed finishes builds while other goroutines append to them
// and to builds that stay open: an append behind a finish fails alone
// (conflict) and its neighbours, on open builds, are stored.
func testGroupSealed(t *testing.T, s buildlog.Store) {
	const n = 8
	for i := range n {
		create(t, s, NewBuild(fmt.Sprintf("open-%d", i), At(0)))
		create(t, s, NewBuild(fmt.Sprintf("closing-%d", i), At(0)))
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		done = map[string][]appended{}
	)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("open-%d", i)
			for j := range 30 {
				b := BatchOf(fmt.Sprintf("%s %d", id, j))
				res, err := s.Append(t.Context(), id, b, At(1))
				if err != nil {
					t.Errorf("%s: %v", id, err)
					return
				}
				mu.Lock()
				done[id] = append(done[id], appended{b, res})
				mu.Unlock()
			}
		})
		wg.Go(func() {
			id := fmt.Sprintf("closing-%d", i)
			appendOK(t, s, id, BatchOf("before"), At(1))
			if _, _, err := s.Finish(t.Context(), id, &buildlog.Finish{Status: buildlog.StatusFailed, Timestamp: Timestamp}, At(2)); err != nil {
				t.Errorf("Finish(%s): %v", id, err)
				return
			}
			for j := range 10 {
				_, err := s.Append(t.Context(), id, BatchOf(fmt.Sprintf("after %d", j)), At(3))
				wantCode(t, err, buildlog.EConflict, id+": append after finish")
			}
		})
	}
	wg.Wait()
	for i := range n {
		id := fmt.Sprintf("open-%d", i)
		checkAppended(t, s, NewBuild(id, At(0)), done[id])
		closing := Lines(t, ReadAll(t, s, fmt.Sprintf("closing-%d", i)))
		if len(closing) != 2 || strings.Contains(closing[1], "after") {
			t.Errorf("closing-%d holds %q, want its one entry and the terminal one", i, closing)
		}
	}
}

// testAppendGuards checks what the HTTP layer relies on to serve lookups
// from memory: the store refuses, in the transaction that would store it,
// a batch whose key was revoked or whose build is not the one it was let
// in for, and stores nothing.
func testAppendGuards(t *testing.T, s buildlog.Store) {
	b := NewBuild("guarded", At(5))
	create(t, s, b)
	k := &buildlog.Key{ID: "key_guard", Team: "acme", Scopes: []buildlog.Scope{buildlog.ScopeWrite},
		CreatedAt: At(1), Hash: buildlog.HashKey("guard-secret")}
	if err := s.CreateKey(t.Context(), k); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	guarded := func(msg string, keyID string, created bool) *buildlog.Batch {
		batch := BatchOf(msg)
		batch.KeyID = keyID
		if created {
			batch.Created = getBuild(t, s, b.ID).CreatedAt
		}
		return batch
	}
	appendOK(t, s, b.ID, guarded("with its key and build", k.ID, true), At(6))

	other := guarded("for an older build of the same id", "", false)
	other.Created = At(4)
	_, err := s.Append(t.Context(), b.ID, other, At(7))
	wantCode(t, err, buildlog.ENotFound, "Append for another build under the same id")

	if err := s.DeleteKey(t.Context(), k.ID); err != nil {
		t.Fatalf("DeleteKey: %v", err)
	}
	_, err = s.Append(t.Context(), b.ID, guarded("after revocation", k.ID, true), At(8))
	wantCode(t, err, buildlog.EUnauthorized, "Append with a revoked key")

	if got := Lines(t, ReadAll(t, s, b.ID)); len(got) != 1 {
		t.Errorf("log holds %d entries after refused appends, want 1", len(got))
	}
	if got := getBuild(t, s, b.ID); got.NextOffset != 1 {
		t.Errorf("NextOffset = %d after refused appends, want 1", got.NextOffset)
	}
}

// testAppendCancelled appends with contexts that end while the batch may
// still be waiting for the writer, beside producers that keep it busy.
// Whatever Append answers must be the truth: nil means stored, once; the
// context's error means not stored at all.
func testAppendCancelled(t *testing.T, s buildlog.Store) {
	create(t, s, NewBuild("busy-neighbour", At(0)))
	create(t, s, NewBuild("cancelled", At(0)))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Append(t.Context(), "busy-neighbour", BatchOf(fmt.Sprintf("w%d %d", w, i)), At(1)); err != nil {
					t.Errorf("neighbour: %v", err)
					return
				}
			}
		})
	}
	acked := map[string]bool{}
	cancelled := 0
	for i := range 200 {
		msg := fmt.Sprintf("maybe %d", i)
		ctx, cancel := context.WithCancel(t.Context())
		if i%2 == 0 {
			cancel() // before the writer can have taken it
		}
		res := make(chan error, 1)
		go func() {
			_, err := s.Append(ctx, "cancelled", BatchOf(msg), At(2))
			res <- err
		}()
		// Some end at once, some a moment later, while the writer may
		// hold them: no answer depends on which.
		time.Sleep(time.Duration(i%5) * 100 * time.Microsecond)
		cancel()
		err := <-res
		switch {
		case err == nil:
			acked[msg] = true
		case ctx.Err() != nil && err == ctx.Err():
			cancelled++
		default:
			t.Fatalf("Append with an ending context: %v, want success or %v", err, ctx.Err())
		}
	}
	close(stop)
	wg.Wait()
	lines := Lines(t, ReadAll(t, s, "cancelled"))
	seen := map[string]bool{}
	for _, l := range lines {
		var msg string
		for m := range acked {
			if strings.Contains(l, `"message":"`+m+`"`) {
				msg = m
			}
		}
		if msg == "" {
			t.Errorf("stored %s, which Append did not acknowledge", l)
			continue
		}
		if seen[msg] {
			t.Errorf("%q stored twice", msg)
		}
		seen[msg] = true
	}
	if len(seen) != len(acked) {
		t.Errorf("%d acknowledged appends stored, want %d", len(seen), len(acked))
	}
	t.Logf("%d acknowledged, %d refused with the context's error", len(acked), cancelled)
}
