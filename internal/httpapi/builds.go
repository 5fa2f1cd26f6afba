package httpapi

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"buildlog"
)

// buildJSON is a build as the API shows it.
func buildJSON(b *buildlog.Build) *buildlog.Build {
	c := *b
	c.EntryCount = c.NextOffset
	return &c
}

func (a *API) getBuild(w http.ResponseWriter, r *http.Request) error {
	b, err := a.readableBuild(r, r.PathValue("build_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, buildJSON(b))
	return nil
}

// The paged listings (builds, a hook's deliveries) take a limit of 1 to
// maxListLimit, defaultListLimit when none is given.
const (
	defaultListLimit = 50
	maxListLimit     = 1000
)

// listLimit is a paged listing's limit query parameter.
func listLimit(q url.Values) (int, error) {
	if !q.Has("limit") {
		return defaultListLimit, nil
	}
	n, err := strconv.Atoi(q.Get("limit"))
	if err != nil || n < 1 || n > maxListLimit {
		return 0, buildlog.Errorf(buildlog.EInvalid, "limit: want an integer from 1 to %d", maxListLimit)
	}
	return n, nil
}

func (a *API) listBuilds(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authenticate(r, buildlog.ScopeRead, "")
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := buildlog.BuildFilter{Team: p.teamFilter(), TemplateID: q.Get("template_id")}
	if s := q.Get("status"); s != "" {
		f.Status = buildlog.Status(s)
		if !f.Status.Valid() {
			return buildlog.Errorf(buildlog.EInvalid, "status: want one of queued, building, ready, failed, cancelled, timeout")
		}
	}
	if f.Limit, err = listLimit(q); err != nil {
		return err
	}
	if c := q.Get("cursor"); c != "" {
		cur, ok := parseListCursor(c)
		if !ok {
			return buildlog.Errorf(buildlog.EInvalid, "cursor: not one this server issued")
		}
		f.After = cur
	}
	// One more than asked tells whether a next page exists.
	want := f.Limit
	f.Limit++
	bs, err := a.cfg.Store.Builds(r.Context(), f)
	if err != nil {
		return err
	}
	out := struct {
		Builds     []*buildlog.Build `json:"builds"`
		NextCursor string            `json:"next_cursor,omitempty"`
	}{Builds: make([]*buildlog.Build, 0, len(bs))}
	for i, b := range bs {
		if i == want {
			last := bs[want-1]
			out.NextCursor = listCursor(last.CreatedAt, last.ID)
			break
		}
		out.Builds = append(out.Builds, buildJSON(b))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func listCursor(t time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(t.UnixNano(), 10) + "|" + id))
}

func parseListCursor(s string) (*buildlog.BuildCursor, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, false
	}
	ns, id, ok := strings.Cut(string(raw), "|")
	if !ok || !buildlog.ValidID(id) {
		return nil, false
	}
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return nil, false
	}
	return &buildlog.BuildCursor{CreatedAt: time.Unix(0, n).UTC(), ID: id}, true
}
