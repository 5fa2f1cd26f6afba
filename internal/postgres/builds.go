package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"buildlog"
)

// buildColumns is the order scanBuild reads.
const buildColumns = `id, template_id, team, namespace, name, version, total_steps, max_attempts,
	metadata, status, created_at, started_at, finished_at, updated_at, next_offset, result,
	last_phase, last_activity, secrets`

func scanBuild(row pgx.Row) (*buildlog.Build, error) {
	var (
		b                     buildlog.Build
		metadata, result      []byte
		started, finished     *time.Time
		created, updated, act time.Time
		next                  int64
	)
	err := row.Scan(&b.ID, &b.TemplateID, &b.Team, &b.Namespace, &b.Name, &b.Version,
		&b.TotalSteps, &b.MaxAttempts, &metadata, &b.Status, &created, &started, &finished,
		&updated, &next, &result, &b.LastPhase, &act, &b.Secrets)
	if err != nil {
		return nil, err
	}
	if len(metadata) > 0 {
		b.Metadata = json.RawMessage(metadata)
	}
	if len(result) > 0 {
		b.Result = json.RawMessage(result)
	}
	b.CreatedAt, b.UpdatedAt, b.LastActivity = created.UTC(), updated.UTC(), act.UTC()
	b.StartedAt, b.FinishedAt = utcPtr(started), utcPtr(finished)
	// Offsets are dense from 0, so the next offset is the entry count.
	b.NextOffset = uint64(next)
	b.EntryCount = b.NextOffset
	if len(b.Secrets) == 0 {
		b.Secrets = nil
	}
	return &b, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func nullBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

func notFound(id string) error { return buildlog.Errorf(buildlog.ENotFound, "build %s not found", id) }

// CreateBuild stores a new build; conflict if its id exists.
func (s *Store) CreateBuild(ctx context.Context, b *buildlog.Build) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return insertBuild(ctx, s.pool, b)
}

// execer is a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// insertBuild stores every field of b as it is, next_offset and status
// included (Import copies builds with their logs this way).
func insertBuild(ctx context.Context, db execer, b *buildlog.Build) error {
	updated, activity := b.UpdatedAt, b.LastActivity
	if updated.IsZero() {
		updated = b.CreatedAt
	}
	if activity.IsZero() {
		activity = b.CreatedAt
	}
	secrets := b.Secrets
	if secrets == nil {
		secrets = []string{}
	}
	_, err := db.Exec(ctx, `INSERT INTO builds (`+buildColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`,
		b.ID, b.TemplateID, b.Team, b.Namespace, b.Name, b.Version, b.TotalSteps, b.MaxAttempts,
		nullBytes(b.Metadata), string(b.Status), b.CreatedAt, b.StartedAt, b.FinishedAt, updated,
		int64(b.NextOffset), nullBytes(b.Result), b.LastPhase, activity, secrets)
	if isUniqueViolation(err) {
		return buildlog.Errorf(buildlog.EConflict, "build %s already exists", b.ID)
	}
	if err != nil {
		return fmt.Errorf("postgres: create build: %w", err)
	}
	return nil
}

// Build returns the build with id; not_found if there is none.
func (s *Store) Build(ctx context.Context, id string) (*buildlog.Build, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	b, err := scanBuild(s.pool.QueryRow(ctx, `SELECT `+buildColumns+` FROM builds WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: build: %w", err)
	}
	return b, nil
}

// Builds lists builds newest first; a Limit of 0 or less lists them all.
func (s *Store) Builds(ctx context.Context, f buildlog.BuildFilter) ([]*buildlog.Build, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.Team != "" {
		where = append(where, "team = "+arg(f.Team))
	}
	if f.TemplateID != "" {
		where = append(where, "template_id = "+arg(f.TemplateID))
	}
	if f.Status != "" {
		where = append(where, "status = "+arg(string(f.Status)))
	}
	if f.After != nil {
		// A row comparison, so the (created_at, id) indexes serve it.
		where = append(where, fmt.Sprintf("(created_at, id) < (%s, %s)", arg(f.After.CreatedAt), arg(f.After.ID)))
	}
	q := `SELECT ` + buildColumns + ` FROM builds`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at DESC, id DESC`
	if f.Limit > 0 {
		q += ` LIMIT ` + arg(f.Limit)
	}
	return s.queryBuilds(ctx, "builds", q, args...)
}

func (s *Store) queryBuilds(ctx context.Context, op, q string, args ...any) ([]*buildlog.Build, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", op, err)
	}
	defer rows.Close()
	var out []*buildlog.Build
	for rows.Next() {
		b, err := scanBuild(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: %s: %w", op, err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", op, err)
	}
	return out, nil
}

// LatestBuild returns the newest build of namespace/name/version visible to
// team ("" for every team); not_found if there is none.
func (s *Store) LatestBuild(ctx context.Context, team, namespace, name, version string) (*buildlog.Build, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	b, err := scanBuild(s.pool.QueryRow(ctx, `SELECT `+buildColumns+` FROM builds
		WHERE namespace = $1 AND name = $2 AND version = $3 AND ($4 = '' OR team = $4)
		ORDER BY created_at DESC, id DESC LIMIT 1`, namespace, name, version, team))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, buildlog.Errorf(buildlog.ENotFound, "no build of %s/%s/%s", namespace, name, version)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: latest build: %w", err)
	}
	return b, nil
}

// appendChunk stores a batch at first and advances the build past it, in
// one statement; the caller holds the build's row lock. The NOTIFY is
// queued in the same transaction, so other servers hear of the chunk only
// once it is committed, and never of one that rolled back.
const appendChunk = `WITH chunk AS (
	INSERT INTO chunks (build_id, first_offset, count, terminal, hash, data)
	VALUES ($1, $2, $3, $4, $5, $6)
), build AS (
	UPDATE builds SET
		next_offset = $2::bigint + $3::integer,
		status = CASE WHEN $7::text <> '' THEN $7::text WHEN status = 'queued' THEN 'building' ELSE status END,
		started_at = CASE WHEN $7::text <> '' THEN started_at ELSE COALESCE(started_at, $8) END,
		finished_at = CASE WHEN $7::text <> '' THEN $8 ELSE finished_at END,
		result = CASE WHEN $7::text <> '' THEN $9 ELSE result END,
		updated_at = $8,
		last_activity = $8,
		last_phase = CASE WHEN $10::text <> '' THEN $10::text ELSE last_phase END
	WHERE id = $1
	RETURNING ` + buildColumns + `
), notice AS (
	SELECT pg_notify('` + commitChannel + `', $1) AS sent
)
SELECT ` + buildColumns + ` FROM build, notice`

// Append stores b at the build's next offset, or recognises a retry of a
// batch already stored; see buildlog.Store.
func (s *Store) Append(ctx context.Context, buildID string, b *buildlog.Batch, now time.Time) (buildlog.AppendResult, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var res buildlog.AppendResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The row lock serialises every writer to this build, on every
		// server, from reading next_offset to commit.
		var (
			templateID string
			status     buildlog.Status
			next64     int64
		)
		err := tx.QueryRow(ctx, `SELECT template_id, status, next_offset FROM builds WHERE id = $1 FOR UPDATE`,
			buildID).Scan(&templateID, &status, &next64)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound(buildID)
		}
		if err != nil {
			return err
		}
		next := uint64(next64)
		if fo := b.FirstOffset; fo != nil && *fo != next {
			if *fo < next && len(b.Hash) > 0 {
				// A retry whose first attempt committed (its reply was lost)
				// answers as then, even if the build has since finished.
				var (
					count int
					hash  []byte
				)
				err := tx.QueryRow(ctx, `SELECT count, hash FROM chunks WHERE build_id = $1 AND first_offset = $2`,
					buildID, int64(*fo)).Scan(&count, &hash)
				if err == nil && count == b.Len() && bytes.Equal(hash, b.Hash) {
					res = buildlog.AppendResult{FirstOffset: *fo, NextOffset: *fo + uint64(count), Replayed: true}
					return nil
				}
				if err != nil && !errors.Is(err, pgx.ErrNoRows) {
					return err
				}
			}
			return buildlog.ConflictAt(next, "first_offset: %d is not the next offset %d", *fo, next)
		}
		if status.Terminal() {
			return buildlog.Errorf(buildlog.EConflict, "build %s is finished (%s); its log is sealed", buildID, status)
		}
		data := b.Encode(buildID, templateID, next)
		// Terminal chunks come only from Finish, which also sets the status.
		nb, err := scanBuild(tx.QueryRow(ctx, appendChunk, buildID, int64(next), b.Len(), false,
			nullBytes(b.Hash), data, "", now, nil, b.LastPhase))
		if err != nil {
			return err
		}
		if status == buildlog.StatusQueued {
			if err := insertEvents(ctx, tx, nb, buildlog.EventBuildStarted, now); err != nil {
				return err
			}
		}
		res = buildlog.AppendResult{
			FirstOffset: next,
			NextOffset:  next + uint64(b.Len()),
			Chunk:       buildlog.Chunk{First: next, Count: b.Len(), Data: data},
		}
		return nil
	})
	if err != nil {
		return buildlog.AppendResult{}, wrap("append", err)
	}
	return res, nil
}

// Finish appends f's terminal entry and sets the status; see buildlog.Store.
func (s *Store) Finish(ctx context.Context, buildID string, f *buildlog.Finish, now time.Time) (*buildlog.Build, buildlog.Chunk, error) {
	if !f.Status.Terminal() {
		return nil, buildlog.Chunk{}, buildlog.Errorf(buildlog.EInvalid, "status: want one of ready, failed, cancelled, timeout")
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var (
		out   *buildlog.Build
		chunk buildlog.Chunk
	)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b, err := scanBuild(tx.QueryRow(ctx, `SELECT `+buildColumns+` FROM builds WHERE id = $1 FOR UPDATE`, buildID))
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound(buildID)
		}
		if err != nil {
			return err
		}
		if b.Status.Terminal() {
			if b.Status == f.Status {
				out = b
				return nil
			}
			return buildlog.Errorf(buildlog.EConflict, "build %s already finished as %s", buildID, b.Status)
		}
		// Rechecked under the lock: the sweep picked this build as idle
		// before taking it, and an append (on any server) may have come
		// in between, or another server's sweep may have finished it.
		if !f.IdleBefore.IsZero() && !b.LastActivity.Before(f.IdleBefore) {
			return buildlog.Errorf(buildlog.EConflict, "build %s was active at %s, not idle", buildID,
				b.LastActivity.Format(time.RFC3339Nano))
		}
		fin := *f
		if fin.Timestamp == "" {
			fin.Timestamp = buildlog.Timestamp(now)
		}
		batch := buildlog.NewBatch([]buildlog.Entry{fin.Entry()}, nil, nil)
		data := batch.Encode(buildID, b.TemplateID, b.NextOffset)
		out, err = scanBuild(tx.QueryRow(ctx, appendChunk, buildID, int64(b.NextOffset), 1, true,
			nil, data, string(f.Status), now, nullBytes(f.Result), ""))
		if err != nil {
			return err
		}
		if err := insertEvents(ctx, tx, out, buildlog.EventBuildFinished, now); err != nil {
			return err
		}
		chunk = buildlog.Chunk{First: b.NextOffset, Count: 1, Data: data, Terminal: true}
		return nil
	})
	if err != nil {
		return nil, buildlog.Chunk{}, wrap("finish", err)
	}
	return out, chunk, nil
}

// wrap leaves *buildlog.Error values as they are and marks the rest as the
// store's own failures.
func wrap(op string, err error) error {
	var e *buildlog.Error
	if errors.As(err, &e) {
		return e
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// readChunks returns the chunks from the one holding offset $2 on, while
// the bytes before each are under $3: the chunk that crosses the budget is
// the last. octet_length of a TOASTed bytea reads the stored length without
// fetching the value, so data is fetched only for the rows returned. A read
// looks at no more than buildlog.MaxReadChunks chunks, so that paging through a long log in
// small pages costs each page the same; callers page on anyway.
var readChunks = `SELECT first_offset, count, terminal, data FROM (
	SELECT first_offset, count, terminal, data,
		sum(octet_length(data)) OVER (ORDER BY first_offset) - octet_length(data) AS before
	FROM (
		SELECT first_offset, count, terminal, data FROM chunks
		WHERE build_id = $1 AND first_offset + count > $2
			AND first_offset >= COALESCE(
				(SELECT max(first_offset) FROM chunks WHERE build_id = $1 AND first_offset <= $2), 0)
		ORDER BY first_offset LIMIT ` + strconv.Itoa(buildlog.MaxReadChunks) + `
	) page
) c WHERE before < $3 ORDER BY first_offset`

// ReadLog returns stored chunks from the one holding offset from on; see
// buildlog.Store. An unknown build has no chunks.
func (s *Store) ReadLog(ctx context.Context, buildID string, from uint64, maxBytes int) ([]buildlog.Chunk, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, readChunks, buildID, int64(from), int64(max(maxBytes, 1)))
	if err != nil {
		return nil, fmt.Errorf("postgres: read log: %w", err)
	}
	defer rows.Close()
	var out []buildlog.Chunk
	for rows.Next() {
		var (
			c     buildlog.Chunk
			first int64
		)
		if err := rows.Scan(&first, &c.Count, &c.Terminal, &c.Data); err != nil {
			return nil, fmt.Errorf("postgres: read log: %w", err)
		}
		c.First = uint64(first)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: read log: %w", err)
	}
	return out, nil
}

// IdleBuilds returns ids of unfinished builds last active before t, oldest
// first; a limit of 0 or less returns them all.
func (s *Store) IdleBuilds(ctx context.Context, before time.Time, limit int) ([]string, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT id FROM builds
		WHERE finished_at IS NULL AND last_activity < $1
		ORDER BY last_activity, id LIMIT $2`, before, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("postgres: idle builds: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("postgres: idle builds: %w", err)
	}
	return ids, nil
}

// DeleteFinished deletes up to limit builds that finished before t, their
// chunks with them (ON DELETE CASCADE). Rows another server is deleting at
// the same moment are skipped rather than waited for.
func (s *Store) DeleteFinished(ctx context.Context, before time.Time, limit int) (int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	tag, err := s.pool.Exec(ctx, `DELETE FROM builds WHERE id IN (
		SELECT id FROM builds WHERE finished_at < $1
		ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)`, before, limitArg(limit))
	if err != nil {
		return 0, fmt.Errorf("postgres: delete finished: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// limitArg is a LIMIT parameter: NULL means no limit.
func limitArg(limit int) *int64 {
	if limit <= 0 {
		return nil
	}
	n := int64(limit)
	return &n
}
