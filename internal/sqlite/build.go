package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"buildlog"
)

// buildCols is the column list scanBuild reads, in its order.
const buildCols = `id, template_id, team, namespace, name, version, total_steps, max_attempts,
	metadata, status, created_at, started_at, finished_at, updated_at, next_offset, entry_count,
	result, last_phase, last_activity, secrets, kept_bytes, omitted_from, omitted_to, omitted_entries,
	omitted_bytes, omitted_ts`

type scanner interface{ Scan(dest ...any) error }

func scanBuild(row scanner) (*buildlog.Build, error) {
	var (
		b                            buildlog.Build
		totalSteps, maxAttempts      sql.NullInt64
		started, finished            sql.NullInt64
		created, updated, activity   int64
		next, count                  int64
		status                       string
		secrets                      sql.NullString
		metadata, result             []byte
		namespace, name, version, ph string
		kept, omEntries, omBytes     int64
		omFrom, omTo                 sql.NullInt64
		omTS                         string
	)
	err := row.Scan(&b.ID, &b.TemplateID, &b.Team, &namespace, &name, &version, &totalSteps, &maxAttempts,
		&metadata, &status, &created, &started, &finished, &updated, &next, &count,
		&result, &ph, &activity, &secrets, &kept, &omFrom, &omTo, &omEntries, &omBytes, &omTS)
	if err != nil {
		return nil, err
	}
	b.KeptBytes = uint64(kept)
	if omFrom.Valid && omTo.Valid {
		b.Omitted = &buildlog.Omitted{From: uint64(omFrom.Int64), To: uint64(omTo.Int64),
			Entries: uint64(omEntries), Bytes: uint64(omBytes), Timestamp: omTS}
	}
	b.Namespace, b.Name, b.Version, b.LastPhase = namespace, name, version, ph
	if totalSteps.Valid {
		b.TotalSteps = &totalSteps.Int64
	}
	if maxAttempts.Valid {
		b.MaxAttempts = &maxAttempts.Int64
	}
	if len(metadata) > 0 {
		b.Metadata = metadata
	}
	if len(result) > 0 {
		b.Result = result
	}
	b.Status = buildlog.Status(status)
	b.CreatedAt, b.UpdatedAt, b.LastActivity = fromNanos(created), fromNanos(updated), fromNanos(activity)
	b.StartedAt, b.FinishedAt = fromNullNanos(started), fromNullNanos(finished)
	b.NextOffset, b.EntryCount = uint64(next), uint64(count)
	if secrets.Valid {
		if err := json.Unmarshal([]byte(secrets.String), &b.Secrets); err != nil {
			return nil, err
		}
	}
	return &b, nil
}

func nullInt(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}

// CreateBuild stores b; conflict if its id exists.
func (s *Store) CreateBuild(ctx context.Context, b *buildlog.Build) error {
	var secrets any
	if b.Secrets != nil {
		j, err := json.Marshal(b.Secrets)
		if err != nil {
			return wrap("create build", err)
		}
		secrets = string(j)
	}
	var (
		omFrom, omTo       any
		omEntries, omBytes int64
		omTS               string
	)
	if o := b.Omitted; o != nil {
		omFrom, omTo, omEntries, omBytes, omTS = int64(o.From), int64(o.To), int64(o.Entries), int64(o.Bytes), o.Timestamp
	}
	status := b.Status
	if status == "" {
		status = buildlog.StatusQueued
	}
	return execOne(ctx, s.w, "create build", buildlog.Errorf(buildlog.EConflict, "build %s already exists", b.ID),
		`INSERT INTO builds (`+buildCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING`,
		b.ID, b.TemplateID, b.Team, b.Namespace, b.Name, b.Version, nullInt(b.TotalSteps), nullInt(b.MaxAttempts),
		nullBytes(b.Metadata), string(status), nanos(b.CreatedAt), nullNanos(b.StartedAt), nullNanos(b.FinishedAt),
		nanos(b.UpdatedAt), int64(b.NextOffset), int64(b.EntryCount), nullBytes(b.Result), b.LastPhase,
		nanos(b.LastActivity), secrets, int64(b.KeptBytes), omFrom, omTo, omEntries, omBytes, omTS)
}

// Build returns the build with id; not_found if there is none.
func (s *Store) Build(ctx context.Context, id string) (*buildlog.Build, error) {
	b, err := scanBuild(s.build.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(id)
	}
	return b, wrap("read build", err)
}

func notFound(id string) error {
	return buildlog.Errorf(buildlog.ENotFound, "build %s not found", id)
}

// Builds lists builds newest first (by CreatedAt, then ID descending); a
// Limit of 0 or less lists them all.
func (s *Store) Builds(ctx context.Context, f buildlog.BuildFilter) ([]*buildlog.Build, error) {
	var where []string
	var args []any
	if f.Team != "" {
		where, args = append(where, "team = ?"), append(args, f.Team)
	}
	if f.TemplateID != "" {
		where, args = append(where, "template_id = ?"), append(args, f.TemplateID)
	}
	if f.Status != "" {
		where, args = append(where, "status = ?"), append(args, string(f.Status))
	}
	if f.After != nil {
		where = append(where, "(created_at, id) < (?, ?)")
		args = append(args, nanos(f.After.CreatedAt), f.After.ID)
	}
	q := `SELECT ` + buildCols + ` FROM builds`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at DESC, id DESC`
	if f.Limit > 0 {
		q, args = q+` LIMIT ?`, append(args, f.Limit)
	}
	return queryAll(ctx, s.r, "list builds", scanBuild, q, args...)
}

// LatestBuild returns the newest build of namespace/name/version visible to
// team ("" for every team); not_found if there is none.
func (s *Store) LatestBuild(ctx context.Context, team, namespace, name, version string) (*buildlog.Build, error) {
	row := s.r.QueryRowContext(ctx, `SELECT `+buildCols+` FROM builds
		WHERE namespace = ?1 AND name = ?2 AND version = ?3 AND (?4 = '' OR team = ?4)
		ORDER BY created_at DESC, id DESC LIMIT 1`, namespace, name, version, team)
	b, err := scanBuild(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, buildlog.Errorf(buildlog.ENotFound, "no build of %s/%s/%s", namespace, name, version)
	}
	return b, wrap("latest build", err)
}

// IdleBuilds returns ids of unfinished builds whose last activity is before
// t, oldest first, at most limit (all of them when limit ≤ 0).
func (s *Store) IdleBuilds(ctx context.Context, before time.Time, limit int) ([]string, error) {
	return queryAll(ctx, s.r, "idle builds", scanID, `SELECT id FROM builds
		WHERE finished_at IS NULL AND last_activity < ?
		ORDER BY last_activity, id LIMIT ?`, nanos(before), sqlLimit(limit))
}

func scanID(row scanner) (string, error) {
	var id string
	err := row.Scan(&id)
	return id, err
}

// DeleteFinished deletes up to limit builds (all when limit ≤ 0) that
// finished before t, oldest first; their chunks go with them (ON DELETE
// CASCADE), in the same transaction.
//
// One statement a build: the writer keeps each statement's journal (the
// pages it changes, as they were) in memory (see dsn), so a statement
// deleting a hundred builds' logs at once would hold all their pages;
// one build's is bounded by the size cap (with none, by its log).
func (s *Store) DeleteFinished(ctx context.Context, before time.Time, limit int) (int, error) {
	var n int
	// Through the writer, alone: a delete ordered with every append and
	// finish cannot race them, and its length holds up no group.
	r := &request{Alone: true, Op: &op{Bulk: func(ctx context.Context, tx *sql.Tx) error {
		n = 0
		rows, err := tx.QueryContext(ctx, `SELECT id FROM builds
			WHERE finished_at IS NOT NULL AND finished_at < ? ORDER BY finished_at, id LIMIT ?`, nanos(before), sqlLimit(limit))
		if err != nil {
			return err
		}
		ids, err := collect(rows)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, `DELETE FROM builds WHERE id = ?`, id); err != nil {
				return err
			}
			n++
		}
		return nil
	}}}
	if err := s.Q.Do(ctx, r); err != nil {
		return 0, wrap("delete finished", err)
	}
	return n, nil
}

// sqlLimit maps "no limit" (≤ 0) to SQLite's -1.
func sqlLimit(limit int) int {
	if limit <= 0 {
		return -1
	}
	return limit
}
