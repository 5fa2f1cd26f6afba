package storetest

import (
	"context"
	"slices"
	"sort"
	"time"

	"buildlog"
	"buildlog/internal/wire"
)

// The webhook half of memStore: hooks, the outbox and attempt records.

type memOutbox struct {
	d      buildlog.Delivery // Claim and Attempt as stored: the claim under way, attempts made
	nextAt time.Time
}

type memWebhooks struct {
	hooks   []*buildlog.Webhook
	outbox  []*memOutbox
	records []*buildlog.DeliveryAttempt
	seq     int64
}

// insertEvents is the outbox write Append and Finish make; m.mu is held.
func (m *memStore) insertEvents(b *buildlog.Build, typ string, now time.Time) {
	id := buildlog.NewEventID()
	body, err := wire.EventBody(id, typ, now, copyBuild(b))
	if err != nil {
		panic(err)
	}
	for _, h := range m.wh.hooks {
		if h.Team == b.Team && h.Takes(typ) {
			m.wh.seq++
			m.wh.outbox = append(m.wh.outbox, &memOutbox{nextAt: time.Unix(0, 0), d: buildlog.Delivery{
				Seq: m.wh.seq, EventID: id, Type: typ, BuildID: b.ID, CreatedAt: now.UTC(), Body: body, HookID: h.ID,
			}})
		}
	}
}

func (m *memStore) CreateWebhook(_ context.Context, h *buildlog.Webhook) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if slices.ContainsFunc(m.wh.hooks, func(o *buildlog.Webhook) bool { return o.ID == h.ID }) {
		return buildlog.Errorf(buildlog.EConflict, "exists")
	}
	c := *h
	c.CreatedAt = c.CreatedAt.UTC()
	c.Events = slices.Clone(h.Events)
	m.wh.hooks = append(m.wh.hooks, &c)
	return nil
}

func (m *memStore) Webhook(_ context.Context, id string) (*buildlog.Webhook, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, h := range m.wh.hooks {
		if h.ID == id {
			c := *h
			return &c, nil
		}
	}
	return nil, buildlog.Errorf(buildlog.ENotFound, "no hook")
}

func (m *memStore) Webhooks(_ context.Context, team string) ([]*buildlog.Webhook, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*buildlog.Webhook
	for _, h := range m.wh.hooks {
		if team == "" || h.Team == team {
			c := *h
			out = append(out, &c)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

func (m *memStore) DeleteWebhook(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := slices.IndexFunc(m.wh.hooks, func(h *buildlog.Webhook) bool { return h.ID == id })
	if i < 0 {
		return buildlog.Errorf(buildlog.ENotFound, "no hook")
	}
	m.wh.hooks = slices.Delete(m.wh.hooks, i, i+1)
	m.wh.outbox = slices.DeleteFunc(m.wh.outbox, func(o *memOutbox) bool { return o.d.HookID == id })
	m.wh.records = slices.DeleteFunc(m.wh.records, func(a *buildlog.DeliveryAttempt) bool { return a.HookID == id })
	return nil
}

func (m *memStore) ClaimDeliveries(_ context.Context, now time.Time, lease time.Duration, limit int, skip []string) ([]*buildlog.Delivery, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var due []*memOutbox
	for _, o := range m.wh.outbox {
		if !o.nextAt.After(now) && !slices.Contains(skip, o.d.HookID) {
			due = append(due, o)
		}
	}
	sort.SliceStable(due, func(i, j int) bool {
		if !due[i].nextAt.Equal(due[j].nextAt) {
			return due[i].nextAt.Before(due[j].nextAt)
		}
		return due[i].d.Seq < due[j].d.Seq
	})
	claim := buildlog.NewDeliveryClaim()
	var out []*buildlog.Delivery
	for _, o := range due {
		if len(out) == limit {
			break
		}
		o.nextAt, o.d.Claim = now.Add(lease), claim
		d := o.d
		d.Attempt++
		for _, h := range m.wh.hooks {
			if h.ID == d.HookID {
				d.URL, d.Secret = h.URL, h.Secret
			}
		}
		out = append(out, &d)
	}
	return out, nil
}

func (m *memStore) RecordDelivery(_ context.Context, d *buildlog.Delivery, a *buildlog.DeliveryAttempt, retryAt time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := slices.IndexFunc(m.wh.outbox, func(o *memOutbox) bool { return o.d.Seq == d.Seq && o.d.Claim == d.Claim })
	if i < 0 {
		return buildlog.Errorf(buildlog.EConflict, "not claimed")
	}
	o := m.wh.outbox[i]
	if retryAt.IsZero() {
		m.wh.outbox = slices.Delete(m.wh.outbox, i, i+1)
	} else {
		o.nextAt, o.d.Claim = retryAt, ""
		if a != nil {
			o.d.Attempt = a.Attempt
		}
	}
	if a != nil {
		c := *a
		c.ID, c.Event, c.BuildID, c.HookID, c.At = d.EventID, d.Type, d.BuildID, d.HookID, a.At.UTC()
		m.wh.records = append(m.wh.records, &c)
	}
	return nil
}

func (m *memStore) DeliveryAttempts(_ context.Context, hookID string, limit int) ([]*buildlog.DeliveryAttempt, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*buildlog.DeliveryAttempt
	for i := len(m.wh.records) - 1; i >= 0 && (limit <= 0 || len(out) < limit); i-- {
		if a := m.wh.records[i]; a.HookID == hookID {
			c := *a
			out = append(out, &c)
		}
	}
	return out, nil
}

func (m *memStore) PruneDeliveryAttempts(_ context.Context, before time.Time, limit int) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	m.wh.records = slices.DeleteFunc(m.wh.records, func(a *buildlog.DeliveryAttempt) bool {
		if (limit <= 0 || n < limit) && a.At.Before(before) {
			n++
			return true
		}
		return false
	})
	return n, nil
}

func (m *memStore) PendingDeliveries(context.Context) (buildlog.DeliveryQueue, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := buildlog.DeliveryQueue{Pending: len(m.wh.outbox)}
	for _, o := range m.wh.outbox {
		if q.Oldest.IsZero() || o.d.CreatedAt.Before(q.Oldest) {
			q.Oldest = o.d.CreatedAt
		}
	}
	return q, nil
}
