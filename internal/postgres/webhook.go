package postgres

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"buildlog"
	"buildlog/internal/wire"
)

// event is a build event about to be recorded, rendered (id and body)
// when the status changes, so that it describes the build as it was then.
type event struct {
	id, typ, buildID, team string
	at                     time.Time
	body                   []byte
}

func newEvent(b *buildlog.Build, typ string, now time.Time) (event, error) {
	id := buildlog.NewEventID()
	body, err := wire.EventBody(id, typ, now, b)
	return event{id: id, typ: typ, buildID: b.ID, team: b.Team, at: now, body: body}, err
}

// insertEventsSQL records events (eventArgs): one outbox row for each
// event and each hook of the event's team that takes its type, in the
// events' order, so a build started and finished in one transaction has
// its build.started first. A new event is due at once (next_at the
// epoch), whatever the clock of the server that claims it. It runs in the
// transaction that changes the statuses, after the builds UPDATE, as one
// statement however many events: a pipeline can queue it.
const insertEventsSQL = `INSERT INTO webhook_outbox (event_id, hook_id, type, build_id, created_at, body, next_at)
	SELECT e.id, w.id, e.type, e.build_id, e.at, e.body, 'epoch'
	FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::bytea[])
		WITH ORDINALITY AS e(id, type, build_id, team, at, body, n)
	JOIN webhooks w ON w.team = e.team AND e.type = ANY (w.events)
	ORDER BY e.n, w.created_at, w.id`

func eventArgs(evs []event) []any {
	var (
		ids, types, builds, teams []string
		ats                       []time.Time
		bodies                    [][]byte
	)
	for _, e := range evs {
		ids, types, builds, teams = append(ids, e.id), append(types, e.typ), append(builds, e.buildID), append(teams, e.team)
		ats, bodies = append(ats, e.at), append(bodies, e.body)
	}
	return []any{ids, types, builds, teams, ats, bodies}
}

// insertEvents records event typ of build b (as the transaction has just
// made it) for every hook of b's team that takes it. Call it in the
// transaction that changes the status, after the builds UPDATE.
func insertEvents(ctx context.Context, tx pgx.Tx, b *buildlog.Build, typ string, now time.Time) error {
	e, err := newEvent(b, typ, now)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, insertEventsSQL, eventArgs([]event{e})...)
	return err
}

const hookColumns = `id, team, url, events, secret, created_at`

func scanHook(row pgx.Row) (*buildlog.Webhook, error) {
	var h buildlog.Webhook
	if err := row.Scan(&h.ID, &h.Team, &h.URL, &h.Events, &h.Secret, &h.CreatedAt); err != nil {
		return nil, err
	}
	h.CreatedAt = h.CreatedAt.UTC()
	return &h, nil
}

// CreateWebhook stores h; conflict if its id exists.
func (s *Store) CreateWebhook(ctx context.Context, h *buildlog.Webhook) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	events := h.Events
	if events == nil {
		events = []string{}
	}
	return insertOne(ctx, s.pool, "create webhook", buildlog.Errorf(buildlog.EConflict, "webhook %s already exists", h.ID),
		`INSERT INTO webhooks (`+hookColumns+`) VALUES ($1, $2, $3, $4, $5, $6)`,
		h.ID, h.Team, h.URL, events, h.Secret, h.CreatedAt)
}

// Webhook returns the hook with id; not_found if there is none.
func (s *Store) Webhook(ctx context.Context, id string) (*buildlog.Webhook, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	h, err := scanHook(s.pool.QueryRow(ctx, `SELECT `+hookColumns+` FROM webhooks WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, buildlog.Errorf(buildlog.ENotFound, "webhook %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: webhook: %w", err)
	}
	return h, nil
}

// Webhooks lists the hooks of team ("" for all), oldest first.
func (s *Store) Webhooks(ctx context.Context, team string) ([]*buildlog.Webhook, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return queryAll(ctx, s, "webhooks", scanHook, `SELECT `+hookColumns+` FROM webhooks
		WHERE $1 = '' OR team = $1 ORDER BY created_at, id`, team)
}

// DeleteWebhook deletes a hook; its outbox rows and attempt records go
// with it (ON DELETE CASCADE). A delivery another server has claimed is
// then no longer claimed, so that server records nothing of it.
func (s *Store) DeleteWebhook(ctx context.Context, id string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return deleteOne(ctx, s, "delete webhook", buildlog.Errorf(buildlog.ENotFound, "webhook %s not found", id),
		`DELETE FROM webhooks WHERE id = $1`, id)
}

// claimDue claims due rows in one statement. SKIP LOCKED passes over rows
// another server is claiming at this instant, and once that claim commits
// the row's next_at is past now, so it is no longer due: each row goes to
// one server until its lease runs out.
const claimDue = `WITH due AS (
	SELECT seq, next_at FROM webhook_outbox
	WHERE next_at <= $1 AND hook_id <> ALL ($4::text[])
	ORDER BY next_at, seq LIMIT $3
	FOR UPDATE SKIP LOCKED
)
UPDATE webhook_outbox o SET next_at = $2, claim = $5
FROM due, webhooks w
WHERE o.seq = due.seq AND w.id = o.hook_id
RETURNING o.seq, due.next_at, o.event_id, o.hook_id, o.type, o.build_id, o.created_at, o.body, o.attempts, w.url, w.secret`

// ClaimDeliveries claims up to limit due deliveries; see buildlog.Store.
func (s *Store) ClaimDeliveries(ctx context.Context, now time.Time, lease time.Duration, limit int, skipHooks []string) ([]*buildlog.Delivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if skipHooks == nil {
		skipHooks = []string{} // NULL would make <> ALL unknown, and skip every row
	}
	claim := buildlog.NewDeliveryClaim()
	rows, err := s.pool.Query(ctx, claimDue, now, now.Add(lease), limit, skipHooks, claim)
	if err != nil {
		return nil, fmt.Errorf("postgres: claim deliveries: %w", err)
	}
	defer rows.Close()
	type due struct {
		d  *buildlog.Delivery
		at time.Time
	}
	var got []due
	for rows.Next() {
		d := &buildlog.Delivery{Claim: claim}
		var at time.Time
		if err := rows.Scan(&d.Seq, &at, &d.EventID, &d.HookID, &d.Type, &d.BuildID, &d.CreatedAt,
			&d.Body, &d.Attempt, &d.URL, &d.Secret); err != nil {
			return nil, fmt.Errorf("postgres: claim deliveries: %w", err)
		}
		d.CreatedAt = d.CreatedAt.UTC()
		d.Attempt++
		got = append(got, due{d, at})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: claim deliveries: %w", err)
	}
	// RETURNING has no order of its own.
	sort.Slice(got, func(i, j int) bool {
		if !got[i].at.Equal(got[j].at) {
			return got[i].at.Before(got[j].at)
		}
		return got[i].d.Seq < got[j].d.Seq
	})
	out := make([]*buildlog.Delivery, len(got))
	for i, g := range got {
		out[i] = g.d
	}
	return out, nil
}

// RecordDelivery ends d's claim; see buildlog.Store.
func (s *Store) RecordDelivery(ctx context.Context, d *buildlog.Delivery, a *buildlog.DeliveryAttempt, retryAt time.Time) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var (
			n   int64
			err error
		)
		if retryAt.IsZero() {
			tag, e := tx.Exec(ctx, `DELETE FROM webhook_outbox WHERE seq = $1 AND claim = $2`, d.Seq, d.Claim)
			n, err = tag.RowsAffected(), e
		} else {
			var attempts *int // NULL keeps the count: a release, not an attempt
			if a != nil {
				attempts = &a.Attempt
			}
			tag, e := tx.Exec(ctx, `UPDATE webhook_outbox SET next_at = $1, claim = NULL,
				attempts = COALESCE($2, attempts) WHERE seq = $3 AND claim = $4`, retryAt, attempts, d.Seq, d.Claim)
			n, err = tag.RowsAffected(), e
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return buildlog.Errorf(buildlog.EConflict, "delivery of %s to %s is no longer claimed", d.EventID, d.HookID)
		}
		if a == nil {
			return nil
		}
		_, err = tx.Exec(ctx, `INSERT INTO webhook_deliveries
			(hook_id, event_id, type, build_id, attempt, status_code, error, result, duration_ms, at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			d.HookID, d.EventID, d.Type, d.BuildID, a.Attempt, a.StatusCode, a.Error, a.Result, a.DurationMS, a.At)
		return err
	})
	if err != nil {
		return wrap("record delivery", err)
	}
	return nil
}

// DeliveryAttempts lists a hook's attempt records, newest first.
func (s *Store) DeliveryAttempts(ctx context.Context, hookID string, limit int) ([]*buildlog.DeliveryAttempt, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return queryAll(ctx, s, "deliveries", scanAttempt, `SELECT hook_id, event_id, type, build_id, attempt, status_code, error,
			result, duration_ms, at
		FROM webhook_deliveries WHERE hook_id = $1 ORDER BY seq DESC LIMIT $2`, hookID, limitArg(limit))
}

func scanAttempt(row pgx.Row) (*buildlog.DeliveryAttempt, error) {
	var a buildlog.DeliveryAttempt
	if err := row.Scan(&a.HookID, &a.ID, &a.Event, &a.BuildID, &a.Attempt, &a.StatusCode, &a.Error,
		&a.Result, &a.DurationMS, &a.At); err != nil {
		return nil, err
	}
	a.At = a.At.UTC()
	return &a, nil
}

// PruneDeliveryAttempts deletes up to limit records made before t,
// skipping rows another server is pruning at the same moment.
func (s *Store) PruneDeliveryAttempts(ctx context.Context, before time.Time, limit int) (int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	tag, err := s.pool.Exec(ctx, `DELETE FROM webhook_deliveries WHERE seq IN (
		SELECT seq FROM webhook_deliveries WHERE at < $1
		ORDER BY at, seq LIMIT $2 FOR UPDATE SKIP LOCKED)`, before, limitArg(limit))
	if err != nil {
		return 0, fmt.Errorf("postgres: prune deliveries: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// PendingDeliveries counts the outbox.
func (s *Store) PendingDeliveries(ctx context.Context) (buildlog.DeliveryQueue, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var (
		q      buildlog.DeliveryQueue
		oldest *time.Time
	)
	if err := s.pool.QueryRow(ctx, `SELECT count(*), min(created_at) FROM webhook_outbox`).Scan(&q.Pending, &oldest); err != nil {
		return q, fmt.Errorf("postgres: pending deliveries: %w", err)
	}
	if oldest != nil {
		q.Oldest = oldest.UTC()
	}
	return q, nil
}
