package sqlite

import (
	"context"
	"database/sql"
	"errors"

	"buildlog"
	"buildlog/internal/group"
	"buildlog/internal/logwrite"
	"buildlog/internal/segment"
	"buildlog/internal/wire"
)

// op is one write for the group-commit writer (see logwrite.Op); a bulk
// change runs in a *sql.Tx.
type op = logwrite.Op[*sql.Tx, opX]

// opX is what the SQLite writer adds to an op.
type opX struct {
	// compact marks a bulk change that rewrites chunks only (compaction),
	// leaving every build row as the writer remembers it.
	compact bool
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

	kept         int64         // kept_bytes, as the group has moved it
	omFrom, omTo sql.NullInt64 // the range the size cap dropped, if any
}

// groupTx is one group's transaction and what it has learnt so far.
type groupTx struct {
	s      *Store
	ctx    context.Context
	tx     *sql.Tx
	builds map[string]*buildState // nil value: no such build
	keys   map[string]bool
	// rows are the chunks the group inserts, all at once before it
	// commits; inserted indexes them so that a retry of a batch earlier in
	// the same group is recognised.
	rows     []chunkRow
	inserted map[chunkKey]int
	// omitted counts the bytes the size cap dropped, reported once the
	// group commits.
	omitted int64
}

type chunkKey struct {
	build string
	first int64
}

type chunkRow struct {
	build    string
	first    int64
	count    int
	terminal bool
	hash     []byte
	data     []byte
}

// maxCachedStates bounds the writer's memory of build rows; past it the
// memory starts again empty.
const maxCachedStates = 1 << 16

// commit is the writer: every request of the group in one transaction,
// one flush. A request that fails its own checks is answered alone (those
// checks run before it writes anything); a failure of the store itself
// fails every request of the group, since the transaction that held them
// rolled back.
func (s *Store) commit(reqs []*request) {
	ctx := s.Bg
	if len(reqs) == 1 && reqs[0].Op.Bulk != nil {
		reqs[0].Err = s.runBulk(ctx, reqs[0].Op.Bulk, !reqs[0].Op.X.compact)
		return
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		failAll(reqs, wrap("append", err))
		return
	}
	if len(s.states) > maxCachedStates {
		s.states = map[string]*buildState{}
	}
	g := &groupTx{s: s, ctx: ctx, tx: tx, builds: s.states, keys: map[string]bool{}, inserted: map[chunkKey]int{}}
	for _, r := range reqs {
		o := r.Op
		var err error
		switch {
		case o.Batch != nil:
			err = g.append(o)
		case o.Fin != nil:
			err = g.finish(o)
		}
		var e *buildlog.Error
		if err != nil && !errors.As(err, &e) {
			s.rollback(tx, reqs, err)
			return
		}
		r.Err = err
	}
	if err := g.write(); err != nil {
		s.rollback(tx, reqs, err)
		return
	}
	if err := tx.Commit(); err != nil {
		s.rollback(tx, reqs, err)
		return
	}
	if g.omitted > 0 && s.OnOmit != nil {
		s.OnOmit(g.omitted)
	}
	kick := false
	for _, r := range reqs {
		switch {
		case r.Err != nil:
		case r.Op.Batch != nil:
			s.compactor.Appended(r.Op.BuildID, r.Op.Batch.Size())
		case r.Op.Fin != nil:
			kick = true // a finished build is due
		}
	}
	if kick {
		s.compactor.Kick()
	}
	s.kick()
}

// rollback ends a group that failed: every request gets the store's
// error, and the writer forgets the rows the group had moved in memory.
func (s *Store) rollback(tx *sql.Tx, reqs []*request, err error) {
	tx.Rollback()
	s.states = map[string]*buildState{}
	failAll(reqs, wrap("append", err))
}

// failAll answers err to every request of a group whose transaction
// rolled back, those its own checks had refused too: a check may have
// counted on an earlier request of the group (a finish that sealed the
// build, an append that moved the offset) that is now undone.
func failAll(reqs []*request, err error) {
	for _, r := range reqs {
		r.Err = err
		r.Op.Res, r.Op.Build, r.Op.Chunk = buildlog.AppendResult{}, nil, buildlog.Chunk{}
	}
}

func (s *Store) runBulk(ctx context.Context, fn func(context.Context, *sql.Tx) error, forget bool) error {
	// A bulk change (retention) may delete or rewrite any row.
	if forget {
		s.states = map[string]*buildState{}
	}
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

// state returns the build's row as the group sees it: from the writer's
// memory of earlier groups, else read. The memory is exact because every
// change to a build's log and status goes through this writer (CreateBuild
// adds rows the memory does not hold yet, and a miss is read), it is
// dropped whenever a group rolls back or a bulk change runs, and only one
// server uses a data directory. nil when there is no such build; misses
// are not remembered past the group.
func (g *groupTx) state(id string) (*buildState, error) {
	if st, ok := g.builds[id]; ok {
		return st, nil
	}
	var (
		st     buildState
		status string
	)
	err := g.tx.StmtContext(g.ctx, g.s.appendBuild).QueryRowContext(g.ctx, id).
		Scan(&st.templateID, &status, &st.next, &st.recorded, &st.created, &st.kept, &st.omFrom, &st.omTo)
	if errors.Is(err, sql.ErrNoRows) {
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
	b := o.Batch
	st, err := g.state(o.BuildID)
	if err != nil {
		return err
	}
	if st == nil || (!b.Created.IsZero() && st.created != nanos(b.Created)) {
		return notFound(o.BuildID)
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
	switch err := buildlog.CheckAppend(o.BuildID, st.status, uint64(st.next), b); {
	case errors.Is(err, buildlog.ErrMaybeRetry):
		return g.replay(o, uint64(st.next))
	case err != nil:
		return err
	}
	// Only copying is left to do in the transaction: the entries were
	// encoded up to their offsets before the request was queued.
	data := wire.EncodeBatch(b, o.BuildID, st.templateID, uint64(st.next))
	g.add(chunkRow{build: o.BuildID, first: st.next, count: b.Len(), hash: b.Hash, data: data})
	now := nanos(o.Now)
	if st.status == buildlog.StatusQueued {
		st.status, st.start, st.startedAt = buildlog.StatusBuilding, true, now
	}
	if now-st.recorded >= int64(buildlog.ActivityGranularity) || now < st.recorded {
		st.activity, st.recorded = true, now
	}
	first := st.next
	st.kept += int64(len(data))
	st.next += int64(b.Len())
	st.added += int64(b.Len())
	st.now = now
	if b.LastPhase != "" {
		st.lastPhase = b.LastPhase
	}
	st.dirty = true
	o.Res = buildlog.AppendResult{
		FirstOffset: uint64(first),
		NextOffset:  uint64(st.next),
		Chunk:       buildlog.Chunk{First: uint64(first), Count: b.Len(), Data: data},
	}
	return nil
}

func (g *groupTx) add(c chunkRow) {
	g.inserted[chunkKey{c.build, c.first}] = len(g.rows)
	g.rows = append(g.rows, c)
}

// write inserts the group's chunks and writes back every build row the
// group moved, in multi-row statements: a statement costs the single
// writer about as much as the row it writes.
func (g *groupTx) write() error {
	for rows := g.rows; len(rows) > 0; {
		n := rowCount(len(rows))
		st := g.s.stmt(insertChunks(n))
		args := make([]any, 0, 6*n)
		for _, c := range rows[:n] {
			terminal := 0
			if c.terminal {
				terminal = 1
			}
			args = append(args, c.build, c.first, c.count, terminal, nullBytes(c.hash), c.data)
		}
		if _, err := g.tx.StmtContext(g.ctx, st).ExecContext(g.ctx, args...); err != nil {
			return err
		}
		rows = rows[n:]
	}
	if max := g.s.LogCap.MaxBytes; max > 0 {
		for id, st := range g.builds {
			if st != nil && st.dirty && st.kept > max {
				if err := g.drop(id, st); err != nil {
					return err
				}
			}
		}
	}
	var byCase [2][2][]string
	for id, st := range g.builds {
		if st != nil && st.dirty {
			byCase[b2i(st.start)][b2i(st.activity)] = append(byCase[b2i(st.start)][b2i(st.activity)], id)
		}
	}
	for start := range 2 {
		for activity := range 2 {
			if err := g.update(start == 1, activity == 1, byCase[start][activity]); err != nil {
				return err
			}
		}
	}
	return nil
}

// rowCount is the size of the next multi-row statement for n rows: the
// largest prepared size that n reaches.
func rowCount(n int) int {
	for _, c := range rowCounts {
		if n >= c {
			return c
		}
	}
	return 1
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// update writes back the rows of ids, which share a case of updateBuilds.
func (g *groupTx) update(start, activity bool, ids []string) error {
	for len(ids) > 0 {
		n := rowCount(len(ids))
		stmt := g.s.stmt(updateBuilds(start, activity, n))
		args := make([]any, 0, 7*n)
		for _, id := range ids[:n] {
			st := g.builds[id]
			args = append(args, id, st.now, st.next, st.added, st.lastPhase, st.startedAt, st.kept)
			st.added, st.start, st.activity, st.lastPhase, st.dirty = 0, false, false, "", false
		}
		if _, err := g.tx.StmtContext(g.ctx, stmt).ExecContext(g.ctx, args...); err != nil {
			return err
		}
		if start {
			// build.started, in the transaction that starts the build
			// (the outbox), once its row says so.
			for _, id := range ids[:n] {
				if err := insertEvents(g.ctx, g.tx, id, buildlog.EventBuildStarted, fromNanos(g.builds[id].startedAt)); err != nil {
					return err
				}
			}
		}
		ids = ids[n:]
	}
	return nil
}

// replay answers a batch that may be a retry (buildlog.CheckAppend) from
// what is stored at its first offset: earlier in this group, or before.
func (g *groupTx) replay(o *op, next uint64) (err error) {
	b := o.Batch
	first := *b.FirstOffset
	if i, ok := g.inserted[chunkKey{o.BuildID, int64(first)}]; ok {
		c := g.rows[i]
		o.Res, err = buildlog.Replay(b, next, true, c.count, c.hash)
		return err
	}
	var (
		count int64
		hash  []byte
	)
	err = g.tx.StmtContext(g.ctx, g.s.chunkAt).QueryRowContext(g.ctx, o.BuildID, int64(first)).Scan(&count, &hash)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	o.Res, err = buildlog.Replay(b, next, err == nil, int(count), hash)
	return err
}

// finish appends o's terminal entry as a terminal chunk and sets the
// status. The build's row is read whole, after writing back what earlier
// appends of the group changed in it.
func (g *groupTx) finish(o *op) error {
	f := o.Fin
	if st := g.builds[o.BuildID]; st != nil && st.dirty {
		if err := g.update(st.start, st.activity, []string{o.BuildID}); err != nil {
			return err
		}
	}
	b, err := scanBuild(g.tx.StmtContext(g.ctx, g.s.buildW).QueryRowContext(g.ctx, o.BuildID))
	if errors.Is(err, sql.ErrNoRows) {
		return notFound(o.BuildID)
	}
	if err != nil {
		return err
	}
	if done, err := buildlog.CheckFinish(b, f); done || err != nil {
		if done {
			o.Build, o.Chunk = b, buildlog.Chunk{First: b.NextOffset}
		}
		return err
	}

	e := f.Entry()
	if e.Timestamp == "" {
		e.Timestamp = buildlog.Timestamp(o.Now)
	}
	batch := wire.NewBatch([]buildlog.Entry{e}, nil, nil)
	batch.Terminal = true
	chunk := buildlog.Chunk{First: b.NextOffset, Count: 1, Terminal: true,
		Data: wire.EncodeBatch(batch, o.BuildID, b.TemplateID, b.NextOffset)}
	g.add(chunkRow{build: o.BuildID, first: int64(chunk.First), count: 1, terminal: true, data: chunk.Data})
	t := o.Now.UTC()
	b.Status, b.FinishedAt, b.UpdatedAt, b.LastActivity = f.Status, &t, t, t
	b.NextOffset, b.EntryCount = chunk.End(), b.EntryCount+1
	b.KeptBytes += uint64(len(chunk.Data))
	b.Result = f.Result
	if _, err := g.tx.ExecContext(g.ctx, `UPDATE builds SET status = ?, finished_at = ?, updated_at = ?, last_activity = ?,
			next_offset = ?, entry_count = ?, result = ?, kept_bytes = ? WHERE id = ?`,
		string(b.Status), nanos(t), nanos(t), nanos(t), int64(b.NextOffset), int64(b.EntryCount), nullBytes(b.Result),
		int64(b.KeptBytes), o.BuildID); err != nil {
		return err
	}
	if err := insertEvents(g.ctx, g.tx, o.BuildID, buildlog.EventBuildFinished, o.Now); err != nil {
		return err
	}
	// Later requests read the row as it now is.
	delete(g.builds, o.BuildID)
	if len(b.Result) == 0 {
		b.Result = nil
	}
	o.Build, o.Chunk = b, chunk
	return nil
}

// drop enforces the size cap on a build the group took past it: it
// deletes the oldest stored chunks after the head (whole chunks, never the
// newest, which holds what was just appended) until the log is back under
// the cap, and grows the build's dropped range over them. The hashes of
// dropped batches go too: a retry of one is answered conflict with the
// next offset (see docs/API.md). It runs in the group's transaction, after
// the group's chunks were inserted.
func (g *groupTx) drop(id string, st *buildState) error {
	limit := g.s.LogCap
	start := int64(0)
	if st.omTo.Valid {
		start = st.omTo.Int64 + 1
	} else {
		// The head: chunks from offset 0 until they hold HeadBytes.
		rows, err := g.tx.QueryContext(g.ctx, `SELECT first_offset, count, coalesce(size, length(data)) FROM chunks
			WHERE build_id = ? ORDER BY first_offset`, id)
		if err != nil {
			return err
		}
		var held int64
		for rows.Next() && held < limit.HeadBytes {
			var first, count, size int64
			if err := rows.Scan(&first, &count, &size); err != nil {
				rows.Close()
				return err
			}
			if first < start {
				continue // a compaction's leftover (see compactLog.Swap)
			}
			held, start = held+size, first+count
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	type piece struct{ first, count, size, codec int64 }
	rows, err := g.tx.QueryContext(g.ctx, `SELECT first_offset, count, coalesce(size, length(data)), codec FROM chunks
		WHERE build_id = ? AND first_offset >= ? ORDER BY first_offset LIMIT 1024`, id, start)
	if err != nil {
		return err
	}
	var pieces []piece
	for covered := start; rows.Next(); {
		var p piece
		if err := rows.Scan(&p.first, &p.count, &p.size, &p.codec); err != nil {
			rows.Close()
			return err
		}
		if p.first < covered {
			continue // a compaction's leftover
		}
		pieces, covered = append(pieces, p), p.first+p.count
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	// Only a run contiguous with the range (or the head) can join it.
	var dropped []piece
	excess, bytes, entries := st.kept-limit.MaxBytes, int64(0), int64(0)
	for i, p := range pieces {
		if i == len(pieces)-1 || bytes >= excess || p.first != start+entries {
			break
		}
		dropped = append(dropped, p)
		bytes, entries = bytes+p.size, entries+p.count
	}
	if len(dropped) == 0 {
		return nil // all of it is head and the newest chunk
	}
	last := dropped[len(dropped)-1]
	end := last.first + last.count
	var data []byte
	var size sql.NullInt64
	if err := g.tx.QueryRowContext(g.ctx, `SELECT data, size FROM chunks WHERE build_id = ? AND first_offset = ?`,
		id, last.first).Scan(&data, &size); err != nil {
		return err
	}
	lines, err := segment.Decode(int(last.codec), data, int(size.Int64))
	if err != nil {
		return err
	}
	ts := wire.LastTimestamp(lines)
	if _, err := g.tx.ExecContext(g.ctx, `DELETE FROM chunks WHERE build_id = ?1 AND first_offset >= ?2 AND first_offset < ?3`,
		id, start, end); err != nil {
		return err
	}
	if _, err := g.tx.ExecContext(g.ctx, `DELETE FROM batch_hashes WHERE build_id = ?1 AND first_offset >= ?2 AND first_offset < ?3`,
		id, start, end); err != nil {
		return err
	}
	if _, err := g.tx.ExecContext(g.ctx, `DELETE FROM leftovers WHERE build_id = ?1 AND first_offset >= ?2 AND first_offset < ?3`,
		id, start, end); err != nil {
		return err
	}
	if !st.omFrom.Valid {
		st.omFrom = sql.NullInt64{Int64: start, Valid: true}
	}
	st.omTo = sql.NullInt64{Int64: end - 1, Valid: true}
	st.kept -= bytes
	if _, err := g.tx.ExecContext(g.ctx, `UPDATE builds SET omitted_from = ?, omitted_to = ?,
			omitted_entries = omitted_entries + ?, omitted_bytes = omitted_bytes + ?, omitted_ts = ? WHERE id = ?`,
		st.omFrom.Int64, st.omTo.Int64, entries, bytes, ts, id); err != nil {
		return err
	}
	g.omitted += bytes
	return nil
}
