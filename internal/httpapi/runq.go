package httpapi

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// runQueue runs followers that a commit woke (follower.onWake) on a few
// goroutines that drain it, rather than on a goroutine each: at 2,000
// followers of a build, each commit started 2,000 goroutines, and each
// grew its stack through the write path again.
//
// A follower whose client has stopped reading blocks its drainer in a
// write until the write deadline (30 s). So that such followers cannot
// hold up the rest, a watchdog looks at the drainers every stall interval
// while anything waits, and starts as many as it takes to have the wanted
// number that are not stuck (in one follower's run for longer than the
// interval). Drainers leave once the queue is empty.
type runQueue struct {
	mu       sync.Mutex
	q        []*follower
	head     int // q[head:] are waiting
	drainers map[*drainer]struct{}
	watching bool
}

// drainer is one draining goroutine; since is when it began its current
// follower's run (unix nanoseconds), 0 between runs.
type drainer struct{ since atomic.Int64 }

const (
	// drainersPerCPU is how many drainers not stuck in a write the queue
	// keeps per CPU.
	drainersPerCPU = 8
	// stallInterval is how long a run may take before its drainer counts
	// as stuck, and how often the watchdog looks.
	stallInterval = 5 * time.Millisecond
)

func (rq *runQueue) push(fl *follower) {
	rq.mu.Lock()
	rq.q = append(rq.q, fl)
	var start *drainer
	if len(rq.drainers) < drainersPerCPU*runtime.GOMAXPROCS(0) {
		start = rq.addLocked()
	}
	watch := !rq.watching
	rq.watching = true
	rq.mu.Unlock()
	if start != nil {
		go rq.drain(start)
	}
	if watch {
		time.AfterFunc(stallInterval, rq.watch)
	}
}

func (rq *runQueue) addLocked() *drainer {
	if rq.drainers == nil {
		rq.drainers = make(map[*drainer]struct{})
	}
	d := &drainer{}
	rq.drainers[d] = struct{}{}
	return d
}

// watch tops the drainers up to the number wanted that are not stuck, and
// looks again a stall interval later while anything waits.
func (rq *runQueue) watch() {
	rq.mu.Lock()
	if rq.head == len(rq.q) {
		rq.watching = false
		rq.mu.Unlock()
		return
	}
	now := time.Now().UnixNano()
	free := 0
	for d := range rq.drainers {
		if s := d.since.Load(); s == 0 || now-s < int64(stallInterval) {
			free++
		}
	}
	var start []*drainer
	for ; free < drainersPerCPU*runtime.GOMAXPROCS(0); free++ {
		start = append(start, rq.addLocked())
	}
	rq.mu.Unlock()
	for _, d := range start {
		go rq.drain(d)
	}
	time.AfterFunc(stallInterval, rq.watch)
}

func (rq *runQueue) drain(d *drainer) {
	for {
		rq.mu.Lock()
		if rq.head == len(rq.q) {
			rq.q, rq.head = rq.q[:0], 0
			delete(rq.drainers, d)
			rq.mu.Unlock()
			return
		}
		fl := rq.q[rq.head]
		rq.q[rq.head] = nil
		rq.head++
		rq.mu.Unlock()
		d.since.Store(time.Now().UnixNano())
		fl.run()
		d.since.Store(0)
	}
}
