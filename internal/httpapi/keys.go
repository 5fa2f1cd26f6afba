package httpapi

import (
	"net/http"

	"buildlog"
	"buildlog/internal/wire"
)

func (a *API) createKey(w http.ResponseWriter, r *http.Request) error {
	if _, err := a.authenticate(r, buildlog.ScopeAdmin, ""); err != nil {
		return err
	}
	body, _, err := a.readBody(w, r, false)
	if err != nil {
		return err
	}
	var req struct {
		Team   *string  `json:"team"`
		Scopes []string `json:"scopes"`
		Name   string   `json:"name"`
	}
	if err := wire.StrictUnmarshal(body, &req); err != nil {
		return err
	}
	if req.Team == nil || !buildlog.ValidID(*req.Team) {
		return buildlog.Errorf(buildlog.EInvalid, "team: required, matching ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
	}
	scopes, err := buildlog.ParseScopes(req.Scopes)
	if err != nil {
		return err
	}
	if len(req.Name) > 128 {
		return buildlog.Errorf(buildlog.EInvalid, "name: at most 128 bytes")
	}
	secret, id := buildlog.NewKeySecret()
	k := &buildlog.Key{ID: id, Team: *req.Team, Scopes: scopes, Name: req.Name,
		CreatedAt: a.nowUTC(), Hash: buildlog.HashKey(secret)}
	if err := a.cfg.Store.CreateKey(r.Context(), k); err != nil {
		return err
	}
	// The secret is shown here once; only its hash is kept.
	writeJSON(w, http.StatusCreated, map[string]any{
		"id": k.ID, "key": secret, "team": k.Team, "scopes": k.Scopes, "name": k.Name, "created_at": k.CreatedAt,
	})
	return nil
}

func (a *API) listKeys(w http.ResponseWriter, r *http.Request) error {
	if _, err := a.authenticate(r, buildlog.ScopeAdmin, ""); err != nil {
		return err
	}
	ks, err := a.cfg.Store.Keys(r.Context())
	if err != nil {
		return err
	}
	writeList(w, "keys", ks)
	return nil
}

func (a *API) deleteKey(w http.ResponseWriter, r *http.Request) error {
	if _, err := a.authenticate(r, buildlog.ScopeAdmin, ""); err != nil {
		return err
	}
	id := r.PathValue("id")
	if err := a.cfg.Store.DeleteKey(r.Context(), id); err != nil {
		if buildlog.ErrorCode(err) == buildlog.ENotFound {
			return buildlog.Errorf(buildlog.ENotFound, "key %s not found", id)
		}
		return err
	}
	a.endStreamsOf(id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
