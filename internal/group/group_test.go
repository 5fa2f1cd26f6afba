package group

import (
	"context"
	"runtime"
	"sync"
	"testing"
)

// gate is a commit function that holds the writer until released, so a
// test can queue requests behind a commit and see how they are grouped.
type gate struct {
	mu      sync.Mutex
	groups  [][]int
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}, 100), release: make(chan struct{}, 100)}
}

func (g *gate) commit(reqs []*Request[int]) {
	g.entered <- struct{}{}
	<-g.release
	var ops []int
	for _, r := range reqs {
		ops = append(ops, r.Op)
	}
	g.mu.Lock()
	g.groups = append(g.groups, ops)
	g.mu.Unlock()
}

// queue sends n requests (ops from, from+1, ...) while the writer is held
// in a commit, and waits until all are queued.
func queueBehind(t *testing.T, q *Queue[int], reqs []*Request[int]) *sync.WaitGroup {
	t.Helper()
	var wg sync.WaitGroup
	for _, r := range reqs {
		wg.Go(func() {
			if err := q.Do(context.Background(), r); err != nil {
				t.Errorf("Do(%d): %v", r.Op, err)
			}
		})
		// Queued in order: wait until this one is pending.
		for {
			q.mu.Lock()
			n := len(q.pending)
			in := n > 0 && q.pending[n-1] == r
			q.mu.Unlock()
			if in {
				break
			}
			runtime.Gosched()
		}
	}
	return &wg
}

func TestGroups(t *testing.T) {
	g := newGate()
	q := New(Limits{Entries: 10, Bytes: 1000}, g.commit)
	defer q.Close()

	// A lone request is committed at once, alone.
	first := &Request[int]{Op: 0, Entries: 1}
	done := make(chan error)
	go func() { done <- q.Do(context.Background(), first) }()
	<-g.entered

	reqs := []*Request[int]{
		{Op: 1, Entries: 4}, {Op: 2, Entries: 4}, // together: 8 entries
		{Op: 3, Entries: 4},                                              // would make 12: next group
		{Op: 4, Entries: 30},                                             // over the bound: alone
		{Op: 5, Entries: 1, Alone: true},                                 // asks to be alone
		{Op: 6, Entries: 1, Bytes: 600}, {Op: 7, Entries: 1, Bytes: 600}, // bytes bound
	}
	wg := queueBehind(t, q, reqs)
	for range 7 {
		g.release <- struct{}{}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for range 6 {
		<-g.entered
	}
	wg.Wait()
	want := [][]int{{0}, {1, 2}, {3}, {4}, {5}, {6}, {7}}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.groups) != len(want) {
		t.Fatalf("groups %v, want %v", g.groups, want)
	}
	for i := range want {
		if len(g.groups[i]) != len(want[i]) {
			t.Fatalf("groups %v, want %v", g.groups, want)
		}
		for j := range want[i] {
			if g.groups[i][j] != want[i][j] {
				t.Fatalf("groups %v, want %v", g.groups, want)
			}
		}
	}
	if groups, requests := q.Stats(); groups != 7 || requests != 8 {
		t.Errorf("Stats = %d groups, %d requests; want 7, 8", groups, requests)
	}
}

// A request whose context ends while it is queued is never committed;
// one the writer has taken is answered by the commit, whatever its context.
func TestCancelled(t *testing.T) {
	g := newGate()
	q := New(DefaultLimits, g.commit)
	defer q.Close()
	held := &Request[int]{Op: 0, Entries: 1}
	heldDone := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { heldDone <- q.Do(ctx, held) }()
	<-g.entered // the writer has taken it

	queued := &Request[int]{Op: 1, Entries: 1}
	qctx, qcancel := context.WithCancel(context.Background())
	queuedDone := make(chan error, 1)
	go func() { queuedDone <- q.Do(qctx, queued) }()
	for {
		q.mu.Lock()
		n := len(q.pending)
		q.mu.Unlock()
		if n == 1 {
			break
		}
		runtime.Gosched()
	}
	qcancel()
	if err := <-queuedDone; err != context.Canceled {
		t.Fatalf("queued request with an ended context: %v, want context.Canceled", err)
	}
	cancel() // too late: the writer has it
	g.release <- struct{}{}
	if err := <-heldDone; err != nil {
		t.Fatalf("taken request: %v, want the commit's answer (nil)", err)
	}
	// The abandoned request is dropped, not committed.
	last := &Request[int]{Op: 2, Entries: 1}
	go func() { <-g.entered; g.release <- struct{}{} }()
	if err := q.Do(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, grp := range g.groups {
		for _, op := range grp {
			if op == 1 {
				t.Errorf("the abandoned request was committed: groups %v", g.groups)
			}
		}
	}
}

func TestClosed(t *testing.T) {
	q := New(DefaultLimits, func(reqs []*Request[int]) {})
	if err := q.Do(context.Background(), &Request[int]{Entries: 1}); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q.Close() // twice is fine
	if err := q.Do(context.Background(), &Request[int]{Entries: 1}); err != ErrClosed {
		t.Errorf("Do after Close: %v, want ErrClosed", err)
	}
}
