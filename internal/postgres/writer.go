package postgres

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"buildlog"
	"buildlog/internal/group"
	"buildlog/internal/logwrite"
	"buildlog/internal/segment"
	"buildlog/internal/wire"
)

// op is one write for this server's group-commit writer (see
// logwrite.Op); a bulk change runs in a pgx.Tx.
type op = logwrite.Op[pgx.Tx, opX]

// opX is what the PostgreSQL writer adds to an op.
type opX struct {
	// retry is set on a retry whose offset was not next; it is answered
	// from the stored hash once the group has read it.
	retry bool
	next  uint64
}

type request = group.Request[*op]

// groupState is what one group's transaction has locked and changed.
type groupState struct {
	builds  map[string]*buildlog.Build // nil value: no such build
	changed map[string]bool
	keys    map[string]bool
	// inserted are the chunks the group will insert, by build and first
	// offset, so a retry of a batch earlier in the same group is seen.
	inserted map[chunkKey]chunkRow
	rows     []chunkRow
	// events are the webhook events of the group's status changes, in
	// the order they happened (the outbox: recorded in the transaction
	// that makes the change).
	events   []event
	finished bool  // a finish committed: the compactor has work
	omitted  int64 // bytes the size cap dropped
}

type chunkKey struct {
	build string
	first uint64
}

type chunkRow struct {
	build    string
	first    uint64
	count    int
	terminal bool
	hash     []byte
	data     []byte
}

// commit writes one group in one transaction on one connection, in two
// round trips: the first begins, locks every build row the group touches
// (in id order, so two servers' groups cannot deadlock) and reads them and
// the keys the group relies on; the second inserts every chunk, updates
// every build row, queues the NOTIFY for each build and commits. A retry
// whose offset was not next costs one more, for the stored hashes.
func (s *Store) commit(reqs []*request) {
	ctx, cancel := context.WithTimeout(s.Bg, s.timeout)
	defer cancel()
	if len(reqs) == 1 && reqs[0].Op.Bulk != nil {
		reqs[0].Err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return reqs[0].Op.Bulk(ctx, tx) })
		return
	}
	if err := s.commitGroup(ctx, reqs); err != nil {
		err = wrap("append", err)
		for _, r := range reqs {
			r.Err = err
			r.Op.Res, r.Op.Build, r.Op.Chunk = buildlog.AppendResult{}, nil, buildlog.Chunk{}
		}
		return
	}
	for _, r := range reqs {
		if r.Err == nil && r.Op.Batch != nil {
			s.compactor.Appended(r.Op.BuildID, r.Op.Batch.Size())
		}
	}
}

func (s *Store) commitGroup(ctx context.Context, reqs []*request) (err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	inTx := false
	defer func() {
		if err != nil && inTx {
			// A failed statement leaves the transaction aborted; a
			// connection that cannot even roll back is not reused.
			if _, rerr := conn.Exec(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
				conn.Conn().Close(context.WithoutCancel(ctx))
			}
		}
	}()

	ids, keyIDs := groupIDs(reqs)
	g := &groupState{builds: map[string]*buildlog.Build{}, changed: map[string]bool{},
		keys: map[string]bool{}, inserted: map[chunkKey]chunkRow{}}
	for _, id := range ids {
		g.builds[id] = nil
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(`SELECT `+buildColumns+` FROM builds WHERE id = ANY($1) ORDER BY id FOR UPDATE`, ids)
	b.Queue(`SELECT id FROM keys WHERE id = ANY($1)`, keyIDs)
	inTx = true
	br := conn.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return err
	}
	rows, _ := br.Query()
	for rows.Next() {
		bd, err := scanBuild(rows)
		if err != nil {
			rows.Close()
			br.Close()
			return err
		}
		g.builds[bd.ID] = bd
	}
	if err := rows.Err(); err != nil {
		br.Close()
		return err
	}
	rows, _ = br.Query()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			br.Close()
			return err
		}
		g.keys[id] = true
	}
	if err := rows.Err(); err != nil {
		br.Close()
		return err
	}
	if err := br.Close(); err != nil {
		return err
	}

	var retries []*request
	for _, r := range reqs {
		o := r.Op
		switch {
		case o.Batch != nil:
			r.Err = g.append(o)
		case o.Fin != nil:
			r.Err = g.finish(o)
		}
		if r.Err == nil && o.X.retry {
			retries = append(retries, r)
		}
	}
	if len(retries) > 0 {
		if err := s.answerRetries(ctx, conn.Conn(), g, retries); err != nil {
			return err
		}
	}

	b = &pgx.Batch{}
	if len(g.rows) > 0 {
		var (
			bids          []string
			firsts        []int64
			counts        []int32
			terms         []bool
			hashes, datas [][]byte
		)
		for _, c := range g.rows {
			bids, firsts, counts = append(bids, c.build), append(firsts, int64(c.first)), append(counts, int32(c.count))
			terms, hashes, datas = append(terms, c.terminal), append(hashes, c.hash), append(datas, c.data)
		}
		b.Queue(`INSERT INTO chunks (build_id, first_offset, count, terminal, hash, data)
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[], $4::bool[], $5::bytea[], $6::bytea[])`,
			bids, firsts, counts, terms, hashes, datas)
	}
	if over := s.overCap(g, ids); len(over) > 0 {
		// The cap needs the stored chunks, this group's among them: a
		// round trip more, for builds past their cap only.
		if err := conn.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		b = &pgx.Batch{}
		for _, id := range over {
			if err := s.drop(ctx, conn.Conn(), g, id); err != nil {
				return err
			}
		}
	}
	if len(g.changed) > 0 {
		var (
			uids, statuses, phases []string
			nexts                  []int64
			started, finished      []*time.Time
			updated, active        []time.Time
			results                [][]byte
			kept                   []int64
		)
		for _, id := range ids {
			if !g.changed[id] {
				continue
			}
			bd := g.builds[id]
			uids, statuses, phases = append(uids, id), append(statuses, string(bd.Status)), append(phases, bd.LastPhase)
			nexts, started, finished = append(nexts, int64(bd.NextOffset)), append(started, bd.StartedAt), append(finished, bd.FinishedAt)
			updated, active, results = append(updated, bd.UpdatedAt), append(active, bd.LastActivity), append(results, nullBytes(bd.Result))
			kept = append(kept, int64(bd.KeptBytes))
		}
		b.Queue(`UPDATE builds SET next_offset = u.next, status = u.status, started_at = u.started,
				finished_at = u.finished, result = u.result, updated_at = u.updated,
				last_activity = u.active, last_phase = u.phase, kept_bytes = u.kept
			FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[], $5::timestamptz[],
				$6::bytea[], $7::timestamptz[], $8::timestamptz[], $9::text[], $10::bigint[])
				AS u(id, next, status, started, finished, result, updated, active, phase, kept)
			WHERE builds.id = u.id`,
			uids, nexts, statuses, started, finished, results, updated, active, phases, kept)
		// Queued in the transaction, so other servers hear of the chunks
		// only once they are committed, and never of ones rolled back.
		b.Queue(`SELECT pg_notify('`+commitChannel+`', id) FROM unnest($1::text[]) AS id`, uids)
	}
	if len(g.events) > 0 {
		b.Queue(insertEventsSQL, eventArgs(g.events)...)
	}
	b.Queue("COMMIT")
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	inTx = false
	if g.omitted > 0 && s.OnOmit != nil {
		s.OnOmit(g.omitted)
	}
	if g.finished {
		s.compactor.Kick()
	}
	return nil
}

// overCap returns the builds the group took past the size cap.
func (s *Store) overCap(g *groupState, ids []string) []string {
	max := s.LogCap.MaxBytes
	if max <= 0 {
		return nil
	}
	var over []string
	for _, id := range ids {
		if bd := g.builds[id]; g.changed[id] && bd != nil && !bd.Status.Terminal() && int64(bd.KeptBytes) > max {
			over = append(over, id)
		}
	}
	return over
}

// drop enforces the size cap on a build the group took past it, in the
// group's transaction with the build's row locked: it deletes the oldest
// chunks after the head (whole chunks, never the newest) until the log is
// back under the cap and grows the dropped range over them. Their batch
// hashes go too, so a retry of a dropped batch is answered conflict with
// the next offset (see docs/API.md).
func (s *Store) drop(ctx context.Context, conn *pgx.Conn, g *groupState, id string) error {
	bd := g.builds[id]
	limit := s.LogCap
	start := int64(0)
	if bd.Omitted != nil {
		start = int64(bd.Omitted.To) + 1
	} else {
		rows, err := conn.Query(ctx, `SELECT first_offset, count, coalesce(size, octet_length(data)) FROM chunks
			WHERE build_id = $1 ORDER BY first_offset`, id)
		if err != nil {
			return err
		}
		var held int64
		for rows.Next() && held < limit.HeadBytes {
			var first, size int64
			var count int32
			if err := rows.Scan(&first, &count, &size); err != nil {
				rows.Close()
				return err
			}
			held, start = held+size, first+int64(count)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	type piece struct {
		first, size int64
		count       int32
		codec       int16
	}
	rows, err := conn.Query(ctx, `SELECT first_offset, count, coalesce(size, octet_length(data)), codec FROM chunks
		WHERE build_id = $1 AND first_offset >= $2 ORDER BY first_offset LIMIT 1024`, id, start)
	if err != nil {
		return err
	}
	var pieces []piece
	for rows.Next() {
		var p piece
		if err := rows.Scan(&p.first, &p.count, &p.size, &p.codec); err != nil {
			rows.Close()
			return err
		}
		pieces = append(pieces, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	excess := int64(bd.KeptBytes) - limit.MaxBytes
	var bytes, entries int64
	var dropped []piece
	for i, p := range pieces {
		if i == len(pieces)-1 || bytes >= excess || p.first != start+entries {
			break
		}
		dropped = append(dropped, p)
		bytes, entries = bytes+p.size, entries+int64(p.count)
	}
	if len(dropped) == 0 {
		return nil
	}
	last := dropped[len(dropped)-1]
	end := last.first + int64(last.count)
	var (
		data []byte
		size *int32
	)
	if err := conn.QueryRow(ctx, `SELECT data, size FROM chunks WHERE build_id = $1 AND first_offset = $2`,
		id, last.first).Scan(&data, &size); err != nil {
		return err
	}
	n := 0
	if size != nil {
		n = int(*size)
	}
	lines, err := segment.Decode(int(last.codec), data, n)
	if err != nil {
		return err
	}
	o := buildlog.Omitted{From: uint64(start), Timestamp: wire.LastTimestamp(lines)}
	if bd.Omitted != nil {
		o = *bd.Omitted
		o.Timestamp = wire.LastTimestamp(lines)
	}
	o.To, o.Entries, o.Bytes = uint64(end-1), o.Entries+uint64(entries), o.Bytes+uint64(bytes)
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM chunks WHERE build_id = $1 AND first_offset >= $2 AND first_offset < $3`, id, start, end)
	b.Queue(`DELETE FROM batch_hashes WHERE build_id = $1 AND first_offset >= $2 AND first_offset < $3`, id, start, end)
	b.Queue(`UPDATE builds SET omitted_from = $2, omitted_to = $3, omitted_entries = $4, omitted_bytes = $5, omitted_ts = $6
		WHERE id = $1`, id, int64(o.From), int64(o.To), int64(o.Entries), int64(o.Bytes), o.Timestamp)
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	bd.Omitted = &o
	bd.KeptBytes -= uint64(bytes)
	g.omitted += bytes
	return nil
}

// groupIDs returns the distinct build ids of the group, sorted (the lock
// order), and the key ids its batches rely on.
func groupIDs(reqs []*request) (ids, keys []string) {
	seen := map[string]bool{}
	seenKey := map[string]bool{}
	for _, r := range reqs {
		o := r.Op
		if !seen[o.BuildID] {
			seen[o.BuildID] = true
			ids = append(ids, o.BuildID)
		}
		if o.Batch != nil && o.Batch.KeyID != "" && !seenKey[o.Batch.KeyID] {
			seenKey[o.Batch.KeyID] = true
			keys = append(keys, o.Batch.KeyID)
		}
	}
	sort.Strings(ids)
	if keys == nil {
		keys = []string{}
	}
	return ids, keys
}

// append checks o's batch against the build as the group has moved it and
// queues its chunk. A retry whose offset is not next is marked for
// answering from the stored hashes.
func (g *groupState) append(o *op) error {
	b := o.Batch
	bd := g.builds[o.BuildID]
	if bd == nil || (!b.Created.IsZero() && !bd.CreatedAt.Equal(b.Created)) {
		return notFound(o.BuildID)
	}
	if b.KeyID != "" && !g.keys[b.KeyID] {
		return buildlog.Errorf(buildlog.EUnauthorized, "unknown API key")
	}
	next := bd.NextOffset
	switch err := buildlog.CheckAppend(o.BuildID, bd.Status, next, b); {
	case errors.Is(err, buildlog.ErrMaybeRetry):
		// Earlier in this group, or stored before (answerRetries).
		if c, ok := g.inserted[chunkKey{o.BuildID, *b.FirstOffset}]; ok {
			o.Res, err = buildlog.Replay(b, next, true, c.count, c.hash)
			return err
		}
		o.X.retry, o.X.next = true, next
		return nil
	case err != nil:
		return err
	}
	data := wire.EncodeBatch(b, o.BuildID, bd.TemplateID, next)
	g.add(chunkRow{build: o.BuildID, first: next, count: b.Len(), hash: nullBytes(b.Hash), data: data})
	now := o.Now.UTC().Truncate(time.Microsecond)
	started := bd.Status == buildlog.StatusQueued
	if started {
		bd.Status = buildlog.StatusBuilding
	}
	if bd.StartedAt == nil {
		t := now
		bd.StartedAt = &t
	}
	bd.UpdatedAt, bd.LastActivity = now, now
	if b.LastPhase != "" {
		bd.LastPhase = b.LastPhase
	}
	bd.NextOffset += uint64(b.Len())
	bd.EntryCount = bd.NextOffset
	bd.KeptBytes += uint64(len(data))
	g.changed[o.BuildID] = true
	if started {
		if err := g.event(bd, buildlog.EventBuildStarted, now); err != nil {
			return err
		}
	}
	o.Res = buildlog.AppendResult{
		FirstOffset: next,
		NextOffset:  bd.NextOffset,
		Chunk:       buildlog.Chunk{First: next, Count: b.Len(), Data: data},
	}
	return nil
}

// event renders a webhook event of bd as the group has just made it.
func (g *groupState) event(bd *buildlog.Build, typ string, now time.Time) error {
	e, err := newEvent(bd, typ, now)
	if err != nil {
		return err
	}
	g.events = append(g.events, e)
	return nil
}

func (g *groupState) add(c chunkRow) {
	g.rows = append(g.rows, c)
	g.inserted[chunkKey{c.build, c.first}] = c
}

// finish queues o's terminal entry and sets the status on the build as the
// group has moved it.
func (g *groupState) finish(o *op) error {
	f := o.Fin
	bd := g.builds[o.BuildID]
	if bd == nil {
		return notFound(o.BuildID)
	}
	// Checked under the lock: the sweep picked this build as idle before
	// the group took it, and an append (on any server) may have come in
	// between, or another server's sweep may have finished it.
	if done, err := buildlog.CheckFinish(bd, f); done || err != nil {
		if done {
			out := *bd
			o.Build = &out
		}
		return err
	}
	now := o.Now.UTC().Truncate(time.Microsecond)
	fin := *f
	if fin.Timestamp == "" {
		fin.Timestamp = buildlog.Timestamp(now)
	}
	batch := wire.NewBatch([]buildlog.Entry{fin.Entry()}, nil, nil)
	data := wire.EncodeBatch(batch, o.BuildID, bd.TemplateID, bd.NextOffset)
	g.add(chunkRow{build: o.BuildID, first: bd.NextOffset, count: 1, terminal: true, data: data})
	o.Chunk = buildlog.Chunk{First: bd.NextOffset, Count: 1, Data: data, Terminal: true}
	bd.Status, bd.FinishedAt, bd.UpdatedAt, bd.LastActivity = f.Status, &now, now, now
	bd.Result = f.Result
	if len(bd.Result) == 0 {
		bd.Result = nil
	}
	bd.NextOffset++
	bd.EntryCount = bd.NextOffset
	bd.KeptBytes += uint64(len(data))
	g.changed[o.BuildID] = true
	if err := g.event(bd, buildlog.EventBuildFinished, now); err != nil {
		return err
	}
	g.finished = true
	out := *bd
	o.Build = &out
	return nil
}

// answerRetries reads the stored chunks that retries name: a retry whose
// first attempt committed (its reply was lost) is answered as then, even
// if the build has since finished; any other is a conflict.
func (s *Store) answerRetries(ctx context.Context, conn *pgx.Conn, g *groupState, retries []*request) error {
	var (
		bids   []string
		firsts []int64
	)
	for _, r := range retries {
		bids, firsts = append(bids, r.Op.BuildID), append(firsts, int64(*r.Op.Batch.FirstOffset))
	}
	// A batch's hash is on its chunk until compaction merges the chunk
	// into a segment (whose hash is NULL), then in batch_hashes.
	rows, err := conn.Query(ctx, `SELECT c.build_id, c.first_offset, c.count, c.hash FROM chunks c
		JOIN unnest($1::text[], $2::bigint[]) AS r(build_id, first_offset)
		ON c.build_id = r.build_id AND c.first_offset = r.first_offset WHERE c.hash IS NOT NULL
		UNION ALL SELECT h.build_id, h.first_offset, h.count, h.hash FROM batch_hashes h
		JOIN unnest($1::text[], $2::bigint[]) AS r(build_id, first_offset)
		ON h.build_id = r.build_id AND h.first_offset = r.first_offset`, bids, firsts)
	if err != nil {
		return err
	}
	stored := map[chunkKey]chunkRow{}
	for rows.Next() {
		var (
			c     chunkRow
			first int64
		)
		if err := rows.Scan(&c.build, &first, &c.count, &c.hash); err != nil {
			rows.Close()
			return err
		}
		c.first = uint64(first)
		stored[chunkKey{c.build, c.first}] = c
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, r := range retries {
		o := r.Op
		fo := *o.Batch.FirstOffset
		c, ok := stored[chunkKey{o.BuildID, fo}]
		o.Res, r.Err = buildlog.Replay(o.Batch, o.X.next, ok, c.count, c.hash)
	}
	return nil
}
