package httpapi

import (
	"net/http"
	"sync"

	"buildlog"
)

// appendCache serves the append path's key and build lookups from memory:
// at a few lines an append, the two lookups cost the store about as much
// as the append itself. It holds only what never changes once written (a
// key's team and scopes; a build's team, template, secrets and creation
// time), and the store rechecks what can change, in the transaction that
// stores the batch: that the key still exists (Batch.KeyID: a revoked key
// is refused at once, on every server) and that the build is the one
// looked up (Batch.Created: an id deleted by retention and created again
// is another build). A finished build is refused there as always.
type appendCache struct {
	mu     sync.Mutex
	keys   map[string]*buildlog.Key   // by hash
	builds map[string]*buildlog.Build // the immutable fields only
}

// appendCacheMax bounds each map; past it an arbitrary entry makes room
// (Go's map order), which is enough to keep memory bounded under churn.
const appendCacheMax = 16384

func newAppendCache() *appendCache {
	return &appendCache{keys: map[string]*buildlog.Key{}, builds: map[string]*buildlog.Build{}}
}

func put[V any](m map[string]V, k string, v V) {
	if _, ok := m[k]; !ok && len(m) >= appendCacheMax {
		for old := range m {
			delete(m, old)
			break
		}
	}
	m[k] = v
}

func (c *appendCache) key(hash []byte) *buildlog.Key {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keys[string(hash)]
}

func (c *appendCache) putKey(k *buildlog.Key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	put(c.keys, string(k.Hash), k)
}

func (c *appendCache) build(id string) *buildlog.Build {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.builds[id]
}

func (c *appendCache) putBuild(b *buildlog.Build) {
	c.mu.Lock()
	defer c.mu.Unlock()
	put(c.builds, b.ID, &buildlog.Build{ID: b.ID, TemplateID: b.TemplateID, Team: b.Team, Secrets: b.Secrets, CreatedAt: b.CreatedAt})
}

// forget drops what a refused append shows to be stale.
func (c *appendCache) forget(err error, p *principal, buildID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch buildlog.ErrorCode(err) {
	case buildlog.ENotFound:
		delete(c.builds, buildID)
	case buildlog.EUnauthorized:
		if p.key != nil {
			delete(c.keys, string(p.key.Hash))
		}
	}
}

// appendTarget is a.build for the append path, from the cache when it
// holds the build.
func (a *API) appendTarget(r *http.Request, p *principal, id string) (*buildlog.Build, error) {
	if b := a.cache.build(id); b != nil {
		if !p.admin && (b.Team != p.team || (p.buildID != "" && p.buildID != b.ID)) {
			return nil, buildlog.Errorf(buildlog.ENotFound, "build %s not found", id)
		}
		return b, nil
	}
	b, err := a.build(r, p, id)
	if err != nil {
		return nil, err
	}
	a.cache.putBuild(b)
	return b, nil
}
