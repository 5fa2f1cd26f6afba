// Package logwrite is what the two stores' group-commit writers share:
// the write an append, a finish or a bulk change is (Op), the checks
// Append and Finish make before they queue one, and the writer's own
// state (Writer). The stores differ in the transaction a group commits in
// (Tx), in what each adds to an op (X), and in the commit itself.
package logwrite

import (
	"context"
	"time"

	"buildlog"
	"buildlog/internal/group"
)

// Op is one write for a store's group-commit writer: an append (Batch), a
// finish (Fin), or a bulk change that runs in a transaction of its own
// (Bulk). The writer sets the answer: Res for an append, Build and Chunk
// for a finish.
type Op[Tx, X any] struct {
	BuildID string
	Now     time.Time
	Batch   *buildlog.Batch
	Fin     *buildlog.Finish
	Bulk    func(ctx context.Context, tx Tx) error

	Res   buildlog.AppendResult
	Build *buildlog.Build
	Chunk buildlog.Chunk

	X X // the store's own
}

// Writer is a store's group-commit writer, embedded in its Store: the
// queue every append, finish and retention delete goes through, and the
// per-build size cap the commits enforce.
type Writer[Tx, X any] struct {
	// Q is the queue; Bg is the context commits run in, ended by StopWriter.
	Q      *group.Queue[*Op[Tx, X]]
	Bg     context.Context
	bgStop context.CancelFunc

	// LogCap is the size cap the writer enforces and OnOmit hears of
	// what it drops (SetLogCap).
	LogCap buildlog.LogCap
	OnOmit func(bytes int64)
}

// StartWriter starts the writer, which runs commit on each group (Open
// calls it).
func (w *Writer[Tx, X]) StartWriter(commit func(g []*group.Request[*Op[Tx, X]])) {
	w.Bg, w.bgStop = context.WithCancel(context.Background())
	w.Q = group.New(group.DefaultLimits, commit)
}

// StopWriter answers what is queued, stops the writer and ends Bg (Close
// calls it); a writer never started is left as it is.
func (w *Writer[Tx, X]) StopWriter() {
	if w.Q != nil {
		w.Q.Close()
		w.bgStop()
	}
}

// SetLogCap sets the per-build size cap (a zero MaxBytes is none) and a
// function told of the bytes each commit drops. Call it before the store
// is used.
func (w *Writer[Tx, X]) SetLogCap(c buildlog.LogCap, onOmit func(bytes int64)) {
	w.LogCap, w.OnOmit = c, onOmit
}

// GroupStats reports how many groups the writer committed and how many
// requests they held.
func (w *Writer[Tx, X]) GroupStats() (groups, requests int64) { return w.Q.Stats() }

// Append queues b as an append to the build on q and waits for the
// writer's answer; invalid, without queueing, if b is empty.
func Append[Tx, X any](ctx context.Context, q *group.Queue[*Op[Tx, X]], buildID string, b *buildlog.Batch, now time.Time) (buildlog.AppendResult, error) {
	if b.Len() == 0 {
		return buildlog.AppendResult{}, buildlog.Errorf(buildlog.EInvalid, "entries: a batch needs at least one entry")
	}
	r := &group.Request[*Op[Tx, X]]{Op: &Op[Tx, X]{BuildID: buildID, Batch: b, Now: now}, Entries: b.Len(), Bytes: b.Size()}
	if err := q.Do(ctx, r); err != nil {
		return buildlog.AppendResult{}, err
	}
	return r.Op.Res, nil
}

// Finish queues f as the build's finish on q and waits for the writer's
// answer; invalid, without queueing, unless f's status is terminal.
func Finish[Tx, X any](ctx context.Context, q *group.Queue[*Op[Tx, X]], buildID string, f *buildlog.Finish, now time.Time) (*buildlog.Build, buildlog.Chunk, error) {
	if !f.Status.Terminal() {
		return nil, buildlog.Chunk{}, buildlog.Errorf(buildlog.EInvalid, "status: want one of ready, failed, cancelled, timeout")
	}
	r := &group.Request[*Op[Tx, X]]{Op: &Op[Tx, X]{BuildID: buildID, Fin: f, Now: now}, Entries: 1}
	if err := q.Do(ctx, r); err != nil {
		return nil, buildlog.Chunk{}, err
	}
	return r.Op.Build, r.Op.Chunk, nil
}
