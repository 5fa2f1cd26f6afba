package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"buildlog"
	"buildlog/internal/wire"
)

// insertEvents records event typ of build buildID for every hook of the
// build's team that takes it: one outbox row per hook, all with one event
// id and one body. It reads the build as tx has it, so call it in the
// transaction that changes the status, after the builds UPDATE. When the
// team has no such hook it costs one indexed read and writes nothing.
func insertEvents(ctx context.Context, tx *sql.Tx, buildID, typ string, now time.Time) error {
	rows, err := tx.QueryContext(ctx, `SELECT w.id, w.events FROM builds b JOIN webhooks w ON w.team = b.team
		WHERE b.id = ? ORDER BY w.created_at, w.id`, buildID)
	if err != nil {
		return err
	}
	var hooks []string
	for rows.Next() {
		var id, events string
		if err := rows.Scan(&id, &events); err != nil {
			rows.Close()
			return err
		}
		var evs []string
		if err := json.Unmarshal([]byte(events), &evs); err != nil {
			rows.Close()
			return err
		}
		if slices.Contains(evs, typ) {
			hooks = append(hooks, id)
		}
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(hooks) == 0 {
		return nil
	}
	b, err := scanBuild(tx.QueryRowContext(ctx, `SELECT `+buildCols+` FROM builds WHERE id = ?`, buildID))
	if err != nil {
		return err
	}
	id := buildlog.NewEventID()
	body, err := wire.EventBody(id, typ, now, b)
	if err != nil {
		return err
	}
	// next_at 0, the epoch: a new event is due at once, whatever the
	// clock of whoever claims it.
	for _, h := range hooks {
		if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_outbox
			(event_id, hook_id, type, build_id, created_at, body, next_at) VALUES (?, ?, ?, ?, ?, ?, 0)`,
			id, h, typ, buildID, nanos(now), body); err != nil {
			return err
		}
	}
	return nil
}

const hookCols = `id, team, url, events, secret, created_at`

func scanHook(row scanner) (*buildlog.Webhook, error) {
	var (
		h       buildlog.Webhook
		events  string
		created int64
	)
	if err := row.Scan(&h.ID, &h.Team, &h.URL, &events, &h.Secret, &created); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(events), &h.Events); err != nil {
		return nil, err
	}
	h.CreatedAt = fromNanos(created)
	return &h, nil
}

// CreateWebhook stores h; conflict if its id exists.
func (s *Store) CreateWebhook(ctx context.Context, h *buildlog.Webhook) error {
	events, err := json.Marshal(h.Events)
	if err != nil {
		return wrap("create webhook", err)
	}
	return execOne(ctx, s.w, "create webhook", buildlog.Errorf(buildlog.EConflict, "webhook %s already exists", h.ID),
		`INSERT INTO webhooks (`+hookCols+`) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING`, h.ID, h.Team, h.URL, string(events), h.Secret, nanos(h.CreatedAt))
}

// Webhook returns the hook with id; not_found if there is none.
func (s *Store) Webhook(ctx context.Context, id string) (*buildlog.Webhook, error) {
	h, err := scanHook(s.r.QueryRowContext(ctx, `SELECT `+hookCols+` FROM webhooks WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, buildlog.Errorf(buildlog.ENotFound, "webhook %s not found", id)
	}
	return h, wrap("read webhook", err)
}

// Webhooks lists the hooks of team ("" for all), oldest first.
func (s *Store) Webhooks(ctx context.Context, team string) ([]*buildlog.Webhook, error) {
	return queryAll(ctx, s.r, "list webhooks", scanHook, `SELECT `+hookCols+` FROM webhooks
		WHERE ?1 = '' OR team = ?1 ORDER BY created_at, id`, team)
}

// DeleteWebhook deletes a hook; its outbox rows and attempt records go
// with it (ON DELETE CASCADE), in the same statement.
func (s *Store) DeleteWebhook(ctx context.Context, id string) error {
	return execOne(ctx, s.w, "delete webhook", buildlog.Errorf(buildlog.ENotFound, "webhook %s not found", id),
		`DELETE FROM webhooks WHERE id = ?`, id)
}

// ClaimDeliveries claims up to limit due deliveries; see buildlog.Store.
// The writer connection serialises claims, so a row is never claimed
// twice at once.
func (s *Store) ClaimDeliveries(ctx context.Context, now time.Time, lease time.Duration, limit int, skipHooks []string) ([]*buildlog.Delivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	// Most polls find nothing due: a read on the pool answers that without
	// queueing for the writer behind appends.
	var one int
	err := s.r.QueryRowContext(ctx, `SELECT 1 FROM webhook_outbox WHERE next_at <= ? LIMIT 1`, nanos(now)).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap("claim deliveries", err)
	}
	if skipHooks == nil {
		skipHooks = []string{}
	}
	skip, err := json.Marshal(skipHooks)
	if err != nil {
		return nil, wrap("claim deliveries", err)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, wrap("claim deliveries", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT o.seq, o.event_id, o.hook_id, o.type, o.build_id, o.created_at,
			o.body, o.attempts, w.url, w.secret
		FROM webhook_outbox o JOIN webhooks w ON w.id = o.hook_id
		WHERE o.next_at <= ? AND o.hook_id NOT IN (SELECT value FROM json_each(?))
		ORDER BY o.next_at, o.seq LIMIT ?`, nanos(now), string(skip), limit)
	if err != nil {
		return nil, wrap("claim deliveries", err)
	}
	claim := buildlog.NewDeliveryClaim()
	var (
		out  []*buildlog.Delivery
		seqs []int64
	)
	for rows.Next() {
		d := &buildlog.Delivery{Claim: claim}
		var created int64
		if err := rows.Scan(&d.Seq, &d.EventID, &d.HookID, &d.Type, &d.BuildID, &created,
			&d.Body, &d.Attempt, &d.URL, &d.Secret); err != nil {
			rows.Close()
			return nil, wrap("claim deliveries", err)
		}
		d.CreatedAt = fromNanos(created)
		d.Attempt++
		out = append(out, d)
		seqs = append(seqs, d.Seq)
	}
	if err := rows.Close(); err != nil {
		return nil, wrap("claim deliveries", err)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("claim deliveries", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	list, _ := json.Marshal(seqs)
	if _, err := tx.ExecContext(ctx, `UPDATE webhook_outbox SET next_at = ?, claim = ?
		WHERE seq IN (SELECT value FROM json_each(?))`, nanos(now.Add(lease)), claim, string(list)); err != nil {
		return nil, wrap("claim deliveries", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, wrap("claim deliveries", err)
	}
	return out, nil
}

// RecordDelivery ends d's claim; see buildlog.Store.
func (s *Store) RecordDelivery(ctx context.Context, d *buildlog.Delivery, a *buildlog.DeliveryAttempt, retryAt time.Time) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return wrap("record delivery", err)
	}
	defer tx.Rollback()
	q, args := `DELETE FROM webhook_outbox WHERE seq = ? AND claim = ?`, []any{d.Seq, d.Claim}
	if !retryAt.IsZero() {
		var attempts any // NULL keeps the count: a release, not an attempt
		if a != nil {
			attempts = a.Attempt
		}
		q, args = `UPDATE webhook_outbox SET next_at = ?1, claim = NULL,
			attempts = coalesce(?2, attempts) WHERE seq = ?3 AND claim = ?4`, []any{nanos(retryAt), attempts, d.Seq, d.Claim}
	}
	if err := execOne(ctx, tx, "record delivery",
		buildlog.Errorf(buildlog.EConflict, "delivery of %s to %s is no longer claimed", d.EventID, d.HookID), q, args...); err != nil {
		return err
	}
	if a != nil {
		if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_deliveries
			(hook_id, event_id, type, build_id, attempt, status_code, error, result, duration_ms, at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			d.HookID, d.EventID, d.Type, d.BuildID, a.Attempt, a.StatusCode, a.Error, a.Result, a.DurationMS, nanos(a.At)); err != nil {
			return wrap("record delivery", err)
		}
	}
	return wrap("record delivery", tx.Commit())
}

// DeliveryAttempts lists a hook's attempt records, newest first.
func (s *Store) DeliveryAttempts(ctx context.Context, hookID string, limit int) ([]*buildlog.DeliveryAttempt, error) {
	return queryAll(ctx, s.r, "list deliveries", scanAttempt, `SELECT hook_id, event_id, type, build_id, attempt, status_code, error,
			result, duration_ms, at
		FROM webhook_deliveries WHERE hook_id = ? ORDER BY seq DESC LIMIT ?`, hookID, sqlLimit(limit))
}

func scanAttempt(row scanner) (*buildlog.DeliveryAttempt, error) {
	var (
		a  buildlog.DeliveryAttempt
		at int64
	)
	if err := row.Scan(&a.HookID, &a.ID, &a.Event, &a.BuildID, &a.Attempt, &a.StatusCode, &a.Error,
		&a.Result, &a.DurationMS, &at); err != nil {
		return nil, err
	}
	a.At = fromNanos(at)
	return &a, nil
}

// PruneDeliveryAttempts deletes up to limit records made before t.
func (s *Store) PruneDeliveryAttempts(ctx context.Context, before time.Time, limit int) (int, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE seq IN (
		SELECT seq FROM webhook_deliveries WHERE at < ? ORDER BY at, seq LIMIT ?)`, nanos(before), sqlLimit(limit))
	if err != nil {
		return 0, wrap("prune deliveries", err)
	}
	n, err := res.RowsAffected()
	return int(n), wrap("prune deliveries", err)
}

// PendingDeliveries counts the outbox.
func (s *Store) PendingDeliveries(ctx context.Context) (buildlog.DeliveryQueue, error) {
	var (
		q      buildlog.DeliveryQueue
		oldest sql.NullInt64
	)
	if err := s.r.QueryRowContext(ctx, `SELECT count(*), min(created_at) FROM webhook_outbox`).Scan(&q.Pending, &oldest); err != nil {
		return q, wrap("pending deliveries", err)
	}
	if oldest.Valid {
		q.Oldest = fromNanos(oldest.Int64)
	}
	return q, nil
}
