package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"math"
	"time"

	"buildlog"
)

// Append stores b at the build's next offset in one transaction on the
// single writer connection, which is what serialises offset assignment.
// A retry (b.FirstOffset set) whose batch is already stored with the same
// hash is answered as the first time, even once the build has finished,
// since the producer's batch did get in.
func (s *Store) Append(ctx context.Context, buildID string, b *buildlog.Batch, now time.Time) (buildlog.AppendResult, error) {
	if b.Len() == 0 {
		return buildlog.AppendResult{}, buildlog.Errorf(buildlog.EInvalid, "entries: a batch needs at least one entry")
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return buildlog.AppendResult{}, wrap("append", err)
	}
	defer tx.Rollback()

	var (
		templateID, status string
		next, active       int64
	)
	err = tx.StmtContext(ctx, s.appendBuild).QueryRowContext(ctx, buildID).Scan(&templateID, &status, &next, &active)
	if errors.Is(err, sql.ErrNoRows) {
		return buildlog.AppendResult{}, notFound(buildID)
	}
	if err != nil {
		return buildlog.AppendResult{}, wrap("append", err)
	}
	if fo := b.FirstOffset; fo != nil && *fo != uint64(next) {
		return s.replay(ctx, tx, buildID, b, uint64(next))
	}
	if buildlog.Status(status).Terminal() {
		return buildlog.AppendResult{}, buildlog.Errorf(buildlog.EConflict, "build %s is %s; its log is sealed", buildID, status)
	}

	// Only copying is left to do under the lock: the entries were encoded
	// up to their offsets before the transaction began.
	data := b.Encode(buildID, templateID, uint64(next))
	end := next + int64(b.Len())
	if _, err := tx.StmtContext(ctx, s.insertChunk).ExecContext(ctx, buildID, next, b.Len(), 0, nullBytes(b.Hash), data); err != nil {
		return buildlog.AppendResult{}, wrap("append", err)
	}
	update := s.updateQuiet
	switch {
	case buildlog.Status(status) == buildlog.StatusQueued:
		update = s.updateFirst
	case nanos(now)-active >= int64(buildlog.ActivityGranularity), nanos(now) < active:
		update = s.updateActive
	}
	if _, err := tx.StmtContext(ctx, update).ExecContext(ctx, nanos(now), end, b.Len(), b.LastPhase, buildID); err != nil {
		return buildlog.AppendResult{}, wrap("append", err)
	}
	if buildlog.Status(status) == buildlog.StatusQueued {
		if err := insertEvents(ctx, tx, buildID, buildlog.EventBuildStarted, now); err != nil {
			return buildlog.AppendResult{}, wrap("append", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return buildlog.AppendResult{}, wrap("append", err)
	}
	s.kick()
	return buildlog.AppendResult{
		FirstOffset: uint64(next),
		NextOffset:  uint64(end),
		Chunk:       buildlog.Chunk{First: uint64(next), Count: b.Len(), Data: data},
	}, nil
}

// replay answers a retry whose first offset is not the build's next one:
// as the first time if the same batch (by hash) was stored there, else
// conflict with the offset the producer should resume from.
func (s *Store) replay(ctx context.Context, tx *sql.Tx, buildID string, b *buildlog.Batch, next uint64) (buildlog.AppendResult, error) {
	first := *b.FirstOffset
	if first < next && len(b.Hash) > 0 {
		var (
			count int64
			hash  []byte
		)
		err := tx.StmtContext(ctx, s.chunkAt).QueryRowContext(ctx, buildID, int64(first)).Scan(&count, &hash)
		switch {
		case err == nil && bytes.Equal(hash, b.Hash):
			return buildlog.AppendResult{FirstOffset: first, NextOffset: first + uint64(count), Replayed: true}, nil
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return buildlog.AppendResult{}, wrap("append", err)
		}
	}
	return buildlog.AppendResult{}, buildlog.ConflictAt(next, "first_offset %d is not the build's next offset %d", first, next)
}

// Finish appends f's terminal entry as a terminal chunk and sets the status,
// in one transaction.
func (s *Store) Finish(ctx context.Context, buildID string, f *buildlog.Finish, now time.Time) (*buildlog.Build, buildlog.Chunk, error) {
	if !f.Status.Terminal() {
		return nil, buildlog.Chunk{}, buildlog.Errorf(buildlog.EInvalid, "status: want one of ready, failed, cancelled, timeout")
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, buildlog.Chunk{}, wrap("finish", err)
	}
	defer tx.Rollback()

	b, err := scanBuild(tx.QueryRowContext(ctx, `SELECT `+buildCols+` FROM builds WHERE id = ?`, buildID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, buildlog.Chunk{}, notFound(buildID)
	}
	if err != nil {
		return nil, buildlog.Chunk{}, wrap("finish", err)
	}
	if b.Status.Terminal() {
		if b.Status == f.Status {
			return b, buildlog.Chunk{First: b.NextOffset}, nil
		}
		return nil, buildlog.Chunk{}, buildlog.Errorf(buildlog.EConflict, "build %s is already %s", buildID, b.Status)
	}
	if !f.IdleBefore.IsZero() && !b.LastActivity.Before(f.IdleBefore) {
		return nil, buildlog.Chunk{}, buildlog.Errorf(buildlog.EConflict, "build %s was active since %s", buildID, f.IdleBefore.UTC().Format(time.RFC3339Nano))
	}

	e := f.Entry()
	if e.Timestamp == "" {
		e.Timestamp = buildlog.Timestamp(now)
	}
	batch := buildlog.NewBatch([]buildlog.Entry{e}, nil, nil)
	batch.Terminal = true
	chunk := buildlog.Chunk{First: b.NextOffset, Count: 1, Terminal: true,
		Data: batch.Encode(buildID, b.TemplateID, b.NextOffset)}
	if _, err := tx.StmtContext(ctx, s.insertChunk).ExecContext(ctx, buildID, int64(chunk.First), 1, 1, nil, chunk.Data); err != nil {
		return nil, buildlog.Chunk{}, wrap("finish", err)
	}
	t := now.UTC()
	b.Status, b.FinishedAt, b.UpdatedAt, b.LastActivity = f.Status, &t, t, t
	b.NextOffset, b.EntryCount = chunk.End(), b.EntryCount+1
	b.Result = f.Result
	if _, err := tx.ExecContext(ctx, `UPDATE builds SET status = ?, finished_at = ?, updated_at = ?, last_activity = ?,
			next_offset = ?, entry_count = ?, result = ? WHERE id = ?`,
		string(b.Status), nanos(t), nanos(t), nanos(t), int64(b.NextOffset), int64(b.EntryCount), nullBytes(b.Result), buildID); err != nil {
		return nil, buildlog.Chunk{}, wrap("finish", err)
	}
	if err := insertEvents(ctx, tx, buildID, buildlog.EventBuildFinished, now); err != nil {
		return nil, buildlog.Chunk{}, wrap("finish", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, buildlog.Chunk{}, wrap("finish", err)
	}
	if len(b.Result) == 0 {
		b.Result = nil
	}
	return b, chunk, nil
}

// ReadLog returns whole stored chunks in offset order, the first being the
// one holding from; it stops once maxBytes were read (after at least one).
// An unknown build has no chunks, like an empty one.
func (s *Store) ReadLog(ctx context.Context, buildID string, from uint64, maxBytes int) ([]buildlog.Chunk, error) {
	if from > math.MaxInt64 {
		return nil, nil
	}
	rows, err := s.readLog.QueryContext(ctx, buildID, int64(from))
	if err != nil {
		return nil, wrap("read log", err)
	}
	defer rows.Close()
	var (
		out  []buildlog.Chunk
		read int
	)
	for rows.Next() {
		var (
			first, n, terminal int64
			data               sql.RawBytes
		)
		// RawBytes is the driver's own slice, not a copy; keeping it past
		// Next is safe because modernc.org/sqlite allocates a fresh one for
		// every value, and it saves copying every chunk twice. The
		// conformance suite, which compares several chunks read in one
		// call, would catch a driver that reused its buffer.
		if err := rows.Scan(&first, &n, &terminal, &data); err != nil {
			return nil, wrap("read log", err)
		}
		c := buildlog.Chunk{First: uint64(first), Count: int(n), Terminal: terminal != 0, Data: data}
		if c.End() <= from {
			continue
		}
		out = append(out, c)
		if read += len(c.Data); read >= maxBytes || len(out) >= buildlog.MaxReadChunks {
			break
		}
	}
	return out, wrap("read log", rows.Err())
}
