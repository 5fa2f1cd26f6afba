package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/wire"
)

// TestRun runs the suite against memStore, a minimal reference store, so the
// suite is checked against the contract it states without a database.
func TestRun(t *testing.T) {
	Run(t, func(t *testing.T) buildlog.Store { return &memStore{builds: map[string]*memBuild{}} })
}

type memBuild struct {
	b      buildlog.Build
	chunks []buildlog.Chunk
	hashes [][]byte
}

type memStore struct {
	mu     sync.Mutex
	builds map[string]*memBuild
	keys   []*buildlog.Key
	secret []byte
	wh     memWebhooks
}

var _ buildlog.Store = (*memStore)(nil)

func copyBuild(b *buildlog.Build) *buildlog.Build {
	c := *b
	c.CreatedAt, c.UpdatedAt, c.LastActivity = c.CreatedAt.UTC(), c.UpdatedAt.UTC(), c.LastActivity.UTC()
	if c.StartedAt != nil {
		c.StartedAt = ptr(c.StartedAt.UTC())
	}
	if c.FinishedAt != nil {
		c.FinishedAt = ptr(c.FinishedAt.UTC())
	}
	return &c
}

func (m *memStore) CreateBuild(_ context.Context, b *buildlog.Build) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.builds[b.ID]; ok {
		return buildlog.Errorf(buildlog.EConflict, "exists")
	}
	m.builds[b.ID] = &memBuild{b: *copyBuild(b)}
	return nil
}

func (m *memStore) Build(_ context.Context, id string) (*buildlog.Build, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mb, ok := m.builds[id]
	if !ok {
		return nil, buildlog.Errorf(buildlog.ENotFound, "no build")
	}
	return copyBuild(&mb.b), nil
}

func newer(a, b *buildlog.Build) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.After(b.CreatedAt)
	}
	return a.ID > b.ID
}

func (m *memStore) sorted() []*buildlog.Build {
	var out []*buildlog.Build
	for _, mb := range m.builds {
		out = append(out, copyBuild(&mb.b))
	}
	sort.Slice(out, func(i, j int) bool { return newer(out[i], out[j]) })
	return out
}

func (m *memStore) Builds(_ context.Context, f buildlog.BuildFilter) ([]*buildlog.Build, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*buildlog.Build
	for _, b := range m.sorted() {
		if f.Team != "" && b.Team != f.Team || f.TemplateID != "" && b.TemplateID != f.TemplateID || f.Status != "" && b.Status != f.Status {
			continue
		}
		if f.After != nil && !newer(&buildlog.Build{CreatedAt: f.After.CreatedAt, ID: f.After.ID}, b) {
			continue
		}
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
		out = append(out, b)
	}
	return out, nil
}

func (m *memStore) LatestBuild(_ context.Context, team, ns, name, version string) (*buildlog.Build, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range m.sorted() {
		if (team == "" || b.Team == team) && b.Namespace == ns && b.Name == name && b.Version == version {
			return b, nil
		}
	}
	return nil, buildlog.Errorf(buildlog.ENotFound, "none")
}

func (m *memStore) Append(_ context.Context, id string, batch *buildlog.Batch, now time.Time) (buildlog.AppendResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mb, ok := m.builds[id]
	if !ok || (!batch.Created.IsZero() && !mb.b.CreatedAt.Equal(batch.Created)) {
		return buildlog.AppendResult{}, buildlog.Errorf(buildlog.ENotFound, "no build")
	}
	if batch.KeyID != "" && !slices.ContainsFunc(m.keys, func(k *buildlog.Key) bool { return k.ID == batch.KeyID }) {
		return buildlog.AppendResult{}, buildlog.Errorf(buildlog.EUnauthorized, "unknown API key")
	}
	next := mb.b.NextOffset
	if fo := batch.FirstOffset; fo != nil && *fo != next {
		for i, c := range mb.chunks {
			if c.First == *fo && mb.hashes[i] != nil && bytes.Equal(mb.hashes[i], batch.Hash) {
				return buildlog.AppendResult{FirstOffset: c.First, NextOffset: c.End(), Replayed: true}, nil
			}
		}
		return buildlog.AppendResult{}, buildlog.ConflictAt(next, "not next")
	}
	if mb.b.Status.Terminal() {
		return buildlog.AppendResult{}, buildlog.Errorf(buildlog.EConflict, "finished")
	}
	c := buildlog.Chunk{First: next, Count: batch.Len(), Data: wire.EncodeBatch(batch, id, mb.b.TemplateID, next)}
	mb.chunks, mb.hashes = append(mb.chunks, c), append(mb.hashes, batch.Hash)
	b := &mb.b
	started := b.Status == buildlog.StatusQueued
	if started {
		b.Status, b.StartedAt = buildlog.StatusBuilding, ptr(now)
	}
	b.NextOffset, b.EntryCount = c.End(), c.End()
	if batch.LastPhase != "" {
		b.LastPhase = batch.LastPhase
	}
	b.LastActivity, b.UpdatedAt = now, now
	if started {
		m.insertEvents(b, buildlog.EventBuildStarted, now)
	}
	return buildlog.AppendResult{FirstOffset: c.First, NextOffset: c.End(), Chunk: c}, nil
}

func (m *memStore) Finish(_ context.Context, id string, f *buildlog.Finish, now time.Time) (*buildlog.Build, buildlog.Chunk, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mb, ok := m.builds[id]
	if !ok {
		return nil, buildlog.Chunk{}, buildlog.Errorf(buildlog.ENotFound, "no build")
	}
	b := &mb.b
	if b.Status.Terminal() {
		if b.Status == f.Status {
			return copyBuild(b), buildlog.Chunk{First: b.NextOffset}, nil
		}
		return nil, buildlog.Chunk{}, buildlog.Errorf(buildlog.EConflict, "finished")
	}
	if !f.IdleBefore.IsZero() && !b.LastActivity.Before(f.IdleBefore) {
		return nil, buildlog.Chunk{}, buildlog.Errorf(buildlog.EConflict, "active")
	}
	batch := wire.NewBatch([]buildlog.Entry{f.Entry()}, nil, nil)
	c := buildlog.Chunk{First: b.NextOffset, Count: 1, Terminal: true, Data: wire.EncodeBatch(batch, id, b.TemplateID, b.NextOffset)}
	mb.chunks, mb.hashes = append(mb.chunks, c), append(mb.hashes, nil)
	b.Status, b.FinishedAt, b.UpdatedAt, b.Result = f.Status, ptr(now), now, f.Result
	b.NextOffset, b.EntryCount = c.End(), c.End()
	m.insertEvents(b, buildlog.EventBuildFinished, now)
	return copyBuild(b), c, nil
}

func (m *memStore) ReadLog(_ context.Context, id string, from uint64, maxBytes int) ([]buildlog.Chunk, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mb, ok := m.builds[id]
	if !ok {
		return nil, nil
	}
	var out []buildlog.Chunk
	read := 0
	for _, c := range mb.chunks {
		if c.End() <= from {
			continue
		}
		out = append(out, c)
		if read += len(c.Data); read >= maxBytes || len(out) >= buildlog.MaxReadChunks {
			break
		}
	}
	return out, nil
}

func (m *memStore) IdleBuilds(_ context.Context, before time.Time, limit int) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var bs []*buildlog.Build
	for _, mb := range m.builds {
		if !mb.b.Status.Terminal() && mb.b.LastActivity.Before(before) {
			bs = append(bs, &mb.b)
		}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].LastActivity.Before(bs[j].LastActivity) })
	var out []string
	for _, b := range bs {
		if len(out) == limit {
			break
		}
		out = append(out, b.ID)
	}
	return out, nil
}

func (m *memStore) DeleteFinished(_ context.Context, before time.Time, limit int) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for id, mb := range m.builds {
		if n < limit && mb.b.FinishedAt != nil && mb.b.FinishedAt.Before(before) {
			delete(m.builds, id)
			n++
		}
	}
	return n, nil
}

func (m *memStore) CreateKey(_ context.Context, k *buildlog.Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if slices.ContainsFunc(m.keys, func(o *buildlog.Key) bool { return o.ID == k.ID }) {
		return buildlog.Errorf(buildlog.EConflict, "exists")
	}
	c := *k
	c.CreatedAt = c.CreatedAt.UTC()
	m.keys = append(m.keys, &c)
	return nil
}

func (m *memStore) KeyByHash(_ context.Context, hash []byte) (*buildlog.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range m.keys {
		if bytes.Equal(k.Hash, hash) {
			c := *k
			return &c, nil
		}
	}
	return nil, buildlog.Errorf(buildlog.ENotFound, "no key")
}

func (m *memStore) Keys(context.Context) ([]*buildlog.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := slices.Clone(m.keys)
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

func (m *memStore) DeleteKey(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := slices.IndexFunc(m.keys, func(k *buildlog.Key) bool { return k.ID == id })
	if i < 0 {
		return buildlog.Errorf(buildlog.ENotFound, "no key")
	}
	m.keys = slices.Delete(m.keys, i, i+1)
	return nil
}

func (m *memStore) Secret(context.Context) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.secret == nil {
		m.secret = make([]byte, 32)
		rand.Read(m.secret)
	}
	return m.secret, nil
}

func (m *memStore) Ping(context.Context) error { return nil }
func (m *memStore) Close() error               { return nil }
