// Package logwrite is what the two stores' group-commit writers share:
// the write an append, a finish or a bulk change is (Op), and the checks
// Append and Finish make before they queue one. The stores differ in the
// transaction a group commits in (Tx) and in what each adds to an op (X).
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
