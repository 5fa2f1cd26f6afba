package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"time"

	"buildlog"
	"buildlog/internal/group"
)

// op is one write for the group-commit writer: an append (batch), a finish
// (fin), or a bulk change that runs in a transaction of its own (bulk).
type op struct {
	buildID string
	now     time.Time
	batch   *buildlog.Batch
	fin     *buildlog.Finish
	bulk    func(ctx context.Context, tx *sql.Tx) error

	res   buildlog.AppendResult
	build *buildlog.Build
	chunk buildlog.Chunk
}

type request = group.Request[*op]

// buildState is a build's row as the appends of one group move it; the
// group writes each build's row back once, before it commits.
type buildState struct {
	templateID string
	status     buildlog.Status
	created    int64
	next       int64 // as the group has moved it
	recorded   int64 // last_activity as it will be stored

	added           int64 // entries the group appended
	start, activity bool  // the update must start the build; move last_activity
	now, startedAt  int64 // the newest append's time; the first's, for started_at
	lastPhase       string
	dirty           bool
}

// groupTx is one group's transaction and what it has learnt so far.
type groupTx struct {
	s      *Store
	ctx    context.Context
	tx     *sql.Tx
	builds map[string]*buildState // nil value: no such build
	keys   map[string]bool
}

// commit is the writer: every request of the group in one transaction,
// one flush. A request that fails its own checks is answered alone (those
// checks run before it writes anything); a failure of the store itself
// fails every request of the group, since the transaction that held them
// rolled back.
func (s *Store) commit(reqs []*request) {
	ctx := s.bg
	if len(reqs) == 1 && reqs[0].Op.bulk != nil {
		reqs[0].Err = s.runBulk(ctx, reqs[0].Op.bulk)
		return
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		failAll(reqs, wrap("append", err))
		return
	}
	g := &groupTx{s: s, ctx: ctx, tx: tx, builds: map[string]*buildState{}, keys: map[string]bool{}}
	for _, r := range reqs {
		o := r.Op
		var err error
		switch {
		case o.batch != nil:
			err = g.append(o)
		case o.fin != nil:
			err = g.finish(o)
		}
		var e *buildlog.Error
		if err != nil && !errors.As(err, &e) {
			tx.Rollback()
			failAll(reqs, wrap("append", err))
			return
		}
		r.Err = err
	}
	for id, st := range g.builds {
		if err := g.flush(id, st); err != nil {
			tx.Rollback()
			failAll(reqs, wrap("append", err))
			return
		}
	}
	if err := tx.Commit(); err != nil {
		failAll(reqs, wrap("append", err))
		return
	}
	s.kick()
}

// failAll answers err to every request of a group whose transaction
// rolled back, those its own checks had refused too: a check may have
// counted on an earlier request of the group (a finish that sealed the
// build, an append that moved the offset) that is now undone.
func failAll(reqs []*request, err error) {
	for _, r := range reqs {
		r.Err = err
		r.Op.res, r.Op.build, r.Op.chunk = buildlog.AppendResult{}, nil, buildlog.Chunk{}
	}
}

func (s *Store) runBulk(ctx context.Context, fn func(context.Context, *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.kick()
	return nil
}

// state returns the build's row as the group sees it, reading it on first
// use; nil when there is no such build.
func (g *groupTx) state(id string) (*buildState, error) {
	if st, ok := g.builds[id]; ok {
		return st, nil
	}
	var (
		st     buildState
		status string
	)
	err := g.tx.StmtContext(g.ctx, g.s.appendBuild).QueryRowContext(g.ctx, id).
		Scan(&st.templateID, &status, &st.next, &st.recorded, &st.created)
	if errors.Is(err, sql.ErrNoRows) {
		g.builds[id] = nil
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	st.status = buildlog.Status(status)
	g.builds[id] = &st
	return &st, nil
}

// key reports whether the key id still exists, asking once per group.
func (g *groupTx) key(id string) (bool, error) {
	if ok, seen := g.keys[id]; seen {
		return ok, nil
	}
	var one int
	err := g.tx.StmtContext(g.ctx, g.s.keyExists).QueryRowContext(g.ctx, id).Scan(&one)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, err
	}
	g.keys[id] = err == nil
	return err == nil, nil
}

// append stores o's batch at the build's next offset as the group has
// moved it. A retry (FirstOffset set) whose batch is already stored with
// the same hash is answered as the first time, even once the build has
// finished, since the producer's batch did get in.
func (g *groupTx) append(o *op) error {
	b := o.batch
	st, err := g.state(o.buildID)
	if err != nil {
		return err
	}
	if st == nil || (!b.Created.IsZero() && st.created != nanos(b.Created)) {
		return notFound(o.buildID)
	}
	if b.KeyID != "" {
		ok, err := g.key(b.KeyID)
		if err != nil {
			return err
		}
		if !ok {
			return buildlog.Errorf(buildlog.EUnauthorized, "unknown API key")
		}
	}
	if fo := b.FirstOffset; fo != nil && *fo != uint64(st.next) {
		return g.replay(o, uint64(st.next))
	}
	if st.status.Terminal() {
		return sealed(o.buildID, st.status)
	}
	// Only copying is left to do in the transaction: the entries were
	// encoded up to their offsets before the request was queued.
	data := b.Encode(o.buildID, st.templateID, uint64(st.next))
	if _, err := g.tx.StmtContext(g.ctx, g.s.insertChunk).ExecContext(g.ctx, o.buildID, st.next, b.Len(), 0, nullBytes(b.Hash), data); err != nil {
		return err
	}
	now := nanos(o.now)
	if st.status == buildlog.StatusQueued {
		st.status, st.start, st.startedAt = buildlog.StatusBuilding, true, now
	}
	if now-st.recorded >= int64(buildlog.ActivityGranularity) || now < st.recorded {
		st.activity, st.recorded = true, now
	}
	first := st.next
	st.next += int64(b.Len())
	st.added += int64(b.Len())
	st.now = now
	if b.LastPhase != "" {
		st.lastPhase = b.LastPhase
	}
	st.dirty = true
	o.res = buildlog.AppendResult{
		FirstOffset: uint64(first),
		NextOffset:  uint64(st.next),
		Chunk:       buildlog.Chunk{First: uint64(first), Count: b.Len(), Data: data},
	}
	return nil
}

func sealed(id string, status buildlog.Status) error {
	return buildlog.Errorf(buildlog.EConflict, "build %s is %s; its log is sealed", id, status)
}

// flush writes the group's changes to one build's row.
func (g *groupTx) flush(id string, st *buildState) error {
	if st == nil || !st.dirty {
		return nil
	}
	update, args := g.s.updateQuiet, []any{st.now, st.next, st.added, st.lastPhase, id}
	switch {
	case st.start:
		update, args = g.s.updateFirst, append(args, st.startedAt)
	case st.activity:
		update = g.s.updateActive
	}
	if _, err := g.tx.StmtContext(g.ctx, update).ExecContext(g.ctx, args...); err != nil {
		return err
	}
	st.added, st.start, st.activity, st.lastPhase, st.dirty = 0, false, false, "", false
	return nil
}

// replay answers a retry whose first offset is not the build's next one:
// as the first time if the same batch (by hash) was stored there, else
// conflict with the offset the producer should resume from.
func (g *groupTx) replay(o *op, next uint64) error {
	b := o.batch
	first := *b.FirstOffset
	if first < next && len(b.Hash) > 0 {
		var (
			count int64
			hash  []byte
		)
		err := g.tx.StmtContext(g.ctx, g.s.chunkAt).QueryRowContext(g.ctx, o.buildID, int64(first)).Scan(&count, &hash)
		switch {
		case err == nil && int(count) == b.Len() && bytes.Equal(hash, b.Hash):
			o.res = buildlog.AppendResult{FirstOffset: first, NextOffset: first + uint64(count), Replayed: true}
			return nil
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return err
		}
	}
	return buildlog.ConflictAt(next, "first_offset %d is not the build's next offset %d", first, next)
}

// finish appends o's terminal entry as a terminal chunk and sets the
// status. The build's row is read whole, after writing back what earlier
// appends of the group changed in it.
func (g *groupTx) finish(o *op) error {
	f := o.fin
	if st := g.builds[o.buildID]; st != nil {
		if err := g.flush(o.buildID, st); err != nil {
			return err
		}
	}
	b, err := scanBuild(g.tx.StmtContext(g.ctx, g.s.buildW).QueryRowContext(g.ctx, o.buildID))
	if errors.Is(err, sql.ErrNoRows) {
		return notFound(o.buildID)
	}
	if err != nil {
		return err
	}
	if b.Status.Terminal() {
		if b.Status == f.Status {
			o.build, o.chunk = b, buildlog.Chunk{First: b.NextOffset}
			return nil
		}
		return buildlog.Errorf(buildlog.EConflict, "build %s is already %s", o.buildID, b.Status)
	}
	if !f.IdleBefore.IsZero() && !b.LastActivity.Before(f.IdleBefore) {
		return buildlog.Errorf(buildlog.EConflict, "build %s was active since %s", o.buildID, f.IdleBefore.UTC().Format(time.RFC3339Nano))
	}

	e := f.Entry()
	if e.Timestamp == "" {
		e.Timestamp = buildlog.Timestamp(o.now)
	}
	batch := buildlog.NewBatch([]buildlog.Entry{e}, nil, nil)
	batch.Terminal = true
	chunk := buildlog.Chunk{First: b.NextOffset, Count: 1, Terminal: true,
		Data: batch.Encode(o.buildID, b.TemplateID, b.NextOffset)}
	if _, err := g.tx.StmtContext(g.ctx, g.s.insertChunk).ExecContext(g.ctx, o.buildID, int64(chunk.First), 1, 1, nil, chunk.Data); err != nil {
		return err
	}
	t := o.now.UTC()
	b.Status, b.FinishedAt, b.UpdatedAt, b.LastActivity = f.Status, &t, t, t
	b.NextOffset, b.EntryCount = chunk.End(), b.EntryCount+1
	b.Result = f.Result
	if _, err := g.tx.ExecContext(g.ctx, `UPDATE builds SET status = ?, finished_at = ?, updated_at = ?, last_activity = ?,
			next_offset = ?, entry_count = ?, result = ? WHERE id = ?`,
		string(b.Status), nanos(t), nanos(t), nanos(t), int64(b.NextOffset), int64(b.EntryCount), nullBytes(b.Result), o.buildID); err != nil {
		return err
	}
	// Later requests of the group read the row as it now is.
	delete(g.builds, o.buildID)
	if len(b.Result) == 0 {
		b.Result = nil
	}
	o.build, o.chunk = b, chunk
	return nil
}

// GroupStats reports how many groups the writer committed and how many
// requests they held.
func (s *Store) GroupStats() (groups, requests int64) { return s.q.Stats() }
