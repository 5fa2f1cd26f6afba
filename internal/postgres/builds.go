package postgres

import (
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
	"buildlog/internal/logwrite"
	"buildlog/internal/segment"
	"buildlog/internal/wire"
)

// buildColumns is the order scanBuild reads.
const buildColumns = `id, template_id, team, namespace, name, version, total_steps, max_attempts,
	metadata, status, created_at, started_at, finished_at, updated_at, next_offset, result,
	last_phase, last_activity, secrets, kept_bytes, omitted_from, omitted_to, omitted_entries,
	omitted_bytes, omitted_ts`

func scanBuild(row pgx.Row) (*buildlog.Build, error) {
	var (
		b                     buildlog.Build
		metadata, result      []byte
		started, finished     *time.Time
		created, updated, act time.Time
		next                  int64
		kept, omE, omB        int64
		omFrom, omTo          *int64
		omTS                  string
	)
	err := row.Scan(&b.ID, &b.TemplateID, &b.Team, &b.Namespace, &b.Name, &b.Version,
		&b.TotalSteps, &b.MaxAttempts, &metadata, &b.Status, &created, &started, &finished,
		&updated, &next, &result, &b.LastPhase, &act, &b.Secrets, &kept, &omFrom, &omTo, &omE, &omB, &omTS)
	if err != nil {
		return nil, err
	}
	b.KeptBytes = uint64(kept)
	if omFrom != nil && omTo != nil {
		b.Omitted = &buildlog.Omitted{From: uint64(*omFrom), To: uint64(*omTo), Entries: uint64(omE), Bytes: uint64(omB), Timestamp: omTS}
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
	var (
		omFrom, omTo *int64
		omE, omB     int64
		omTS         string
	)
	if o := b.Omitted; o != nil {
		f, t := int64(o.From), int64(o.To)
		omFrom, omTo, omE, omB, omTS = &f, &t, int64(o.Entries), int64(o.Bytes), o.Timestamp
	}
	return insertOne(ctx, db, "create build", buildlog.Errorf(buildlog.EConflict, "build %s already exists", b.ID),
		`INSERT INTO builds (`+buildColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
			$20, $21, $22, $23, $24, $25)`,
		b.ID, b.TemplateID, b.Team, b.Namespace, b.Name, b.Version, b.TotalSteps, b.MaxAttempts,
		nullBytes(b.Metadata), string(b.Status), b.CreatedAt, b.StartedAt, b.FinishedAt, updated,
		int64(b.NextOffset), nullBytes(b.Result), b.LastPhase, activity, secrets,
		int64(b.KeptBytes), omFrom, omTo, omE, omB, omTS)
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
	return queryAll(ctx, s, "builds", scanBuild, q, args...)
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

// Append stores b at the build's next offset, or recognises a retry of a
// batch already stored, through this server's group-commit writer; see
// buildlog.Store. Other servers' writers are serialised with it by the
// build's row lock.
func (s *Store) Append(ctx context.Context, buildID string, b *buildlog.Batch, now time.Time) (buildlog.AppendResult, error) {
	return logwrite.Append(ctx, s.Q, buildID, b, now)
}

// Finish appends f's terminal entry and sets the status, in a transaction
// of the group-commit writer; see buildlog.Store.
func (s *Store) Finish(ctx context.Context, buildID string, f *buildlog.Finish, now time.Time) (*buildlog.Build, buildlog.Chunk, error) {
	return logwrite.Finish(ctx, s.Q, buildID, f, now)
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
// the (uncompressed) bytes before each are under $3: the chunk that
// crosses the budget is the last, with the build's dropped range on every
// row, read in the same statement and so the same snapshot as the chunks.
// octet_length of a TOASTed bytea reads the stored length without fetching
// the value, so data is fetched only for the rows returned. A read looks
// at no more than buildlog.MaxReadChunks chunks, so that paging through a
// long log in small pages costs each page the same; callers page on
// anyway.
var readChunks = `SELECT first_offset, count, terminal, codec, size, data,
		b.template_id, b.omitted_from, b.omitted_to, b.omitted_entries, b.omitted_bytes, b.omitted_ts
	FROM (
	SELECT first_offset, count, terminal, codec, size, data,
		sum(coalesce(size, octet_length(data))) OVER (ORDER BY first_offset) - coalesce(size, octet_length(data)) AS before
	FROM (
		SELECT first_offset, count, terminal, codec, size, data FROM chunks
		WHERE build_id = $1 AND first_offset + count > $2
			AND first_offset >= COALESCE(
				(SELECT max(first_offset) FROM chunks WHERE build_id = $1 AND first_offset <= $2), 0)
		ORDER BY first_offset LIMIT ` + strconv.Itoa(buildlog.MaxReadChunks) + `
	) page
) c CROSS JOIN (SELECT template_id, omitted_from, omitted_to, omitted_entries, omitted_bytes, omitted_ts
	FROM builds WHERE id = $1) b
WHERE before < $3 ORDER BY first_offset`

// ReadLog returns stored chunks from the one holding offset from on, with
// segments decompressed and an omission notice where the size cap dropped
// entries; see buildlog.Store. An unknown build has no chunks.
func (s *Store) ReadLog(ctx context.Context, buildID string, from uint64, maxBytes int) ([]buildlog.Chunk, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, readChunks, buildID, int64(from), int64(max(maxBytes, 1)))
	if err != nil {
		return nil, fmt.Errorf("postgres: read log: %w", err)
	}
	defer rows.Close()
	var out []buildlog.Chunk
	expect := from
	for rows.Next() {
		var (
			c                 buildlog.Chunk
			first             int64
			codec             int16
			size              *int32
			data              []byte
			templateID, omTS  string
			omFrom, omTo      *int64
			omEntries, omByte int64
		)
		if err := rows.Scan(&first, &c.Count, &c.Terminal, &codec, &size, &data,
			&templateID, &omFrom, &omTo, &omEntries, &omByte, &omTS); err != nil {
			return nil, fmt.Errorf("postgres: read log: %w", err)
		}
		c.First = uint64(first)
		if c.First > expect && omFrom != nil && omTo != nil && c.First == uint64(*omTo)+1 {
			o := buildlog.Omitted{From: uint64(*omFrom), To: uint64(*omTo), Entries: uint64(omEntries), Bytes: uint64(omByte), Timestamp: omTS}
			out = append(out, wire.Notice(&o, buildID, templateID, expect, s.LogCap.MaxBytes))
		}
		n := 0
		if size != nil {
			n = int(*size)
		}
		if c.Data, err = segment.Decode(int(codec), data, n); err != nil {
			return nil, fmt.Errorf("postgres: read log: %w", err)
		}
		out = append(out, c)
		expect = c.End()
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
	var n int64
	// Through this server's writer, alone, so it is ordered with every
	// append and finish the server makes and holds up no group.
	r := &request{Alone: true, Op: &op{Bulk: func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM builds WHERE id IN (
			SELECT id FROM builds WHERE finished_at < $1
			ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)`, before, limitArg(limit))
		n = tag.RowsAffected()
		return err
	}}}
	if err := s.Q.Do(ctx, r); err != nil {
		return 0, fmt.Errorf("postgres: delete finished: %w", err)
	}
	return int(n), nil
}

// limitArg is a LIMIT parameter: NULL means no limit.
func limitArg(limit int) *int64 {
	if limit <= 0 {
		return nil
	}
	n := int64(limit)
	return &n
}
