package httpapi

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"

	"buildlog"
)

// principal is who a request acts as.
type principal struct {
	keyID string // "" for a stream token
	team  string
	admin bool // every team, every scope
	key   *buildlog.Key
	// buildID is set for a stream token: the one build it may read.
	buildID string
	req     *reqState // the request it authenticated, nil outside handle
}

func unauthorized(msg string) error { return buildlog.Errorf(buildlog.EUnauthorized, "%s", msg) }

// authenticate resolves the request's credentials and checks scope. A
// stream token (?token=) is accepted only for reads of tokenBuild, the
// build the route addresses; pass "" on routes that take none.
func (a *API) authenticate(r *http.Request, scope buildlog.Scope, tokenBuild string) (*principal, error) {
	return a.authenticateWith(r, scope, tokenBuild, false)
}

// authenticateWith is authenticate; cached takes the key from the append
// cache when it is there, for routes whose store write rechecks the key
// (see appendCache).
func (a *API) authenticateWith(r *http.Request, scope buildlog.Scope, tokenBuild string, cached bool) (*principal, error) {
	p, err := a.resolve(r, scope, tokenBuild, cached)
	if err != nil {
		return nil, err
	}
	// BUILDLOG_ADMIN_KEY is the operator's own: the rate limit keeps
	// tenants from crowding each other out, not the operator out.
	if a.limiter != nil && p.keyID != "admin" {
		if wait, ok := a.limiter.take(p.limitID()); !ok {
			a.cfg.Metrics.RateLimited("rate_per_key")
			e := buildlog.Errorf(buildlog.ERateLimited, "this key is over its rate of %g requests a second", a.cfg.RatePerKey)
			e.RetryAfter = wait
			return nil, e
		}
	}
	if st := stateOf(r); st != nil {
		p.req, st.p = st, p
	}
	return p, nil
}

// limitID is what the per-key limits count against: the key, or for a
// stream token, its build.
func (p *principal) limitID() string {
	if p.keyID == "" {
		return "token:" + p.buildID
	}
	return p.keyID
}

func (a *API) resolve(r *http.Request, scope buildlog.Scope, tokenBuild string, cached bool) (*principal, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		if tok := r.URL.Query().Get("token"); tok != "" {
			if scope != buildlog.ScopeRead || tokenBuild == "" {
				return nil, unauthorized("a stream token is accepted only on the read routes of its build")
			}
			return a.checkStreamToken(tok, tokenBuild)
		}
		return nil, unauthorized("missing Authorization: Bearer <key>")
	}
	scheme, secret, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(secret) == "" {
		return nil, unauthorized("want Authorization: Bearer <key>")
	}
	secret = strings.TrimSpace(secret)
	hash := buildlog.HashKey(secret)
	if a.adminKey != nil && buildlog.SameHash(hash, a.adminKey) {
		return &principal{keyID: "admin", admin: true}, nil
	}
	var k *buildlog.Key
	if cached {
		k = a.cache.key(hash)
	}
	if k == nil {
		var err error
		k, err = a.cfg.Store.KeyByHash(r.Context(), hash)
		if buildlog.ErrorCode(err) == buildlog.ENotFound || (err == nil && !buildlog.SameHash(hash, k.Hash)) {
			return nil, unauthorized("unknown API key")
		}
		if err != nil {
			return nil, err
		}
		if cached {
			a.cache.putKey(k)
		}
	}
	p := &principal{keyID: k.ID, team: k.Team, admin: k.Admin(), key: k}
	if !k.Can(scope) {
		return nil, buildlog.Errorf(buildlog.EForbidden, "this key lacks the %s scope", scope)
	}
	return p, nil
}

// teamFilter is the team a principal's listings are limited to ("" = all).
func (p *principal) teamFilter() string {
	if p.admin {
		return ""
	}
	return p.team
}

// teamFor is the team a create request names (named, nil if it names
// none) for the principal: only an admin key may name one, and an admin
// key that names none creates in the default team.
func (p *principal) teamFor(named *string) (string, error) {
	switch {
	case named != nil && !p.admin:
		return "", buildlog.Errorf(buildlog.EForbidden, "team: only an admin key may name a team")
	case named != nil:
		return *named, nil
	case p.admin:
		return buildlog.DefaultTeam, nil
	}
	return p.team, nil
}

// readableBuild authenticates a read of the build id (a stream token for
// it will do) and loads it, as every dialect's build-status route does.
func (a *API) readableBuild(r *http.Request, id string) (*buildlog.Build, error) {
	p, err := a.authenticate(r, buildlog.ScopeRead, id)
	if err != nil {
		return nil, err
	}
	return a.build(r, p, id)
}

// build loads a build the principal may see. Another team's build is
// answered exactly as a missing one, so ids cannot be probed.
func (a *API) build(r *http.Request, p *principal, id string) (*buildlog.Build, error) {
	notFound := buildlog.Errorf(buildlog.ENotFound, "build %s not found", id)
	if !buildlog.ValidID(id) {
		return nil, notFound
	}
	b, err := a.cfg.Store.Build(r.Context(), id)
	if buildlog.ErrorCode(err) == buildlog.ENotFound {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if !p.admin && (b.Team != p.team || (p.buildID != "" && p.buildID != b.ID)) {
		return nil, notFound
	}
	return b, nil
}

// Stream tokens are stateless: "st1." + base64(build|team|expiry) + "." +
// base64(HMAC). Every server sharing the store shares the secret, so any of
// them accepts a token any other issued.
const streamTokenPrefix = "st1."

func (a *API) signStreamToken(buildID, team string, exp time.Time) string {
	payload := base64.RawURLEncoding.EncodeToString([]byte(buildID + "|" + team + "|" + strconv.FormatInt(exp.Unix(), 10)))
	m := hmac.New(sha256.New, a.tokenKey)
	m.Write([]byte(payload))
	return streamTokenPrefix + payload + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (a *API) checkStreamToken(tok, buildID string) (*principal, error) {
	bad := unauthorized("invalid or expired stream token")
	rest, ok := strings.CutPrefix(tok, streamTokenPrefix)
	if !ok {
		return nil, bad
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, bad
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return nil, bad
	}
	m := hmac.New(sha256.New, a.tokenKey)
	m.Write([]byte(payload))
	if !hmac.Equal(got, m.Sum(nil)) {
		return nil, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil, bad
	}
	parts := strings.Split(string(raw), "|")
	if len(parts) != 3 {
		return nil, bad
	}
	exp, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil || a.now().Unix() >= exp || parts[0] != buildID {
		return nil, bad
	}
	return &principal{team: parts[1], buildID: parts[0]}, nil
}

func (a *API) createStreamToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("build_id")
	p, err := a.authenticate(r, buildlog.ScopeRead, "")
	if err != nil {
		return err
	}
	b, err := a.build(r, p, id)
	if err != nil {
		return err
	}
	exp := a.now().Add(a.cfg.StreamTokenTTL).Truncate(time.Second)
	writeJSON(w, http.StatusCreated, map[string]any{
		"token":      a.signStreamToken(b.ID, b.Team, exp),
		"expires_at": exp.UTC(),
	})
	return nil
}

// openStream counts a stream against its key's limit and the server's;
// call the returned func when the stream ends. A key's streams are
// registered so that revoking the key ends them.
func (a *API) openStream(p *principal) (func(), error) {
	id := p.limitID()
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	if a.streamCount >= a.cfg.MaxStreams {
		a.cfg.Metrics.RateLimited("streams_per_server")
		e := buildlog.Errorf(buildlog.ERateLimited, "this server has %d open streams, its limit; retry later or elsewhere", a.cfg.MaxStreams)
		e.RetryAfter = 5
		return nil, e
	}
	if a.streams[id] >= a.cfg.MaxStreamsPerKey {
		a.cfg.Metrics.RateLimited("streams_per_key")
		e := buildlog.Errorf(buildlog.ERateLimited, "this key has %d open streams, the limit", a.cfg.MaxStreamsPerKey)
		e.RetryAfter = 5
		return nil, e
	}
	a.streams[id]++
	a.streamCount++
	st := p.req
	revocable := st != nil && p.key != nil
	if revocable {
		m := a.byKey[p.keyID]
		if m == nil {
			m = make(map[*reqState]struct{})
			a.byKey[p.keyID] = m
		}
		m[st] = struct{}{}
	}
	dialect := "a"
	if st != nil && st.route == routeBuildEvents {
		dialect = "b"
	}
	closed := a.cfg.Metrics.StreamOpened(dialect)
	return func() {
		closed()
		a.streamsMu.Lock()
		defer a.streamsMu.Unlock()
		a.streamCount--
		a.streams[id]--
		if a.streams[id] == 0 {
			delete(a.streams, id)
		}
		if revocable {
			delete(a.byKey[p.keyID], st)
			if len(a.byKey[p.keyID]) == 0 {
				delete(a.byKey, p.keyID)
			}
		}
	}, nil
}

// endStreamsOf ends the open streams of key id on this server, cleanly, as
// a drain does: the client sees the stream end (and, reconnecting with
// the revoked key, a 401). Servers sharing the store notice the revocation
// at their streams' next keepalive check instead (see readLog).
func (a *API) endStreamsOf(id string) {
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	for st := range a.byKey[id] {
		st.cancel()
		a.cfg.Metrics.StreamRevoked()
	}
}

// revoked reports whether the key behind a stream was revoked since the
// stream began. A store failure is not a revocation: the stream goes on.
func (a *API) revoked(ctx context.Context) bool {
	st, _ := ctx.Value(reqStateKey{}).(*reqState)
	if st == nil || st.p == nil || st.p.key == nil {
		return false
	}
	_, err := a.cfg.Store.KeyByHash(ctx, st.p.key.Hash)
	if buildlog.ErrorCode(err) == buildlog.ENotFound {
		a.cfg.Metrics.StreamRevoked()
		return true
	}
	return false
}
