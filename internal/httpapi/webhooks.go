package httpapi

import (
	"net/http"

	"buildlog"
	"buildlog/internal/webhook"
	"buildlog/internal/wire"
)

// Hooks are managed with a write key for its own team's builds, or an
// admin key for any team's, like the builds whose events they receive.

func (a *API) createWebhook(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authenticate(r, buildlog.ScopeWrite, "")
	if err != nil {
		return err
	}
	body, _, err := a.readBody(w, r, false)
	if err != nil {
		return err
	}
	nw, u, err := wire.DecodeNewWebhook(body)
	if err != nil {
		return err
	}
	team, err := p.teamFor(nw.Team)
	if err != nil {
		return err
	}
	if !a.cfg.WebhookAllowPrivate {
		if err := webhook.CheckTarget(r.Context(), u); err != nil {
			return err
		}
	}
	secret, id := buildlog.NewWebhookSecret()
	h := &buildlog.Webhook{ID: id, URL: nw.URL, Events: nw.Events, Team: team, CreatedAt: a.nowUTC(), Secret: secret}
	if err := a.cfg.Store.CreateWebhook(r.Context(), h); err != nil {
		return err
	}
	// The secret is shown here once; deliveries are signed with it.
	writeJSON(w, http.StatusCreated, &buildlog.CreatedWebhook{
		ID: h.ID, URL: h.URL, Events: h.Events, Team: h.Team, Secret: secret, CreatedAt: h.CreatedAt,
	})
	return nil
}

func (a *API) listWebhooks(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authenticate(r, buildlog.ScopeWrite, "")
	if err != nil {
		return err
	}
	hs, err := a.cfg.Store.Webhooks(r.Context(), p.teamFilter())
	if err != nil {
		return err
	}
	writeList(w, "webhooks", hs)
	return nil
}

// webhook loads a hook the principal may manage; another team's is
// answered exactly as a missing one.
func (a *API) webhook(r *http.Request, p *principal, id string) (*buildlog.Webhook, error) {
	notFound := buildlog.Errorf(buildlog.ENotFound, "webhook %s not found", clipHeader(id))
	h, err := a.cfg.Store.Webhook(r.Context(), id)
	if buildlog.ErrorCode(err) == buildlog.ENotFound {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if !p.admin && h.Team != p.team {
		return nil, notFound
	}
	return h, nil
}

func (a *API) deleteWebhook(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authenticate(r, buildlog.ScopeWrite, "")
	if err != nil {
		return err
	}
	h, err := a.webhook(r, p, r.PathValue("id"))
	if err != nil {
		return err
	}
	// Its pending deliveries go with it: none is attempted from now on
	// (one under way may still reach the receiver).
	if err := a.cfg.Store.DeleteWebhook(r.Context(), h.ID); err != nil {
		if buildlog.ErrorCode(err) == buildlog.ENotFound {
			return buildlog.Errorf(buildlog.ENotFound, "webhook %s not found", h.ID)
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) listDeliveries(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authenticate(r, buildlog.ScopeWrite, "")
	if err != nil {
		return err
	}
	limit, err := listLimit(r.URL.Query())
	if err != nil {
		return err
	}
	h, err := a.webhook(r, p, r.PathValue("id"))
	if err != nil {
		return err
	}
	ds, err := a.cfg.Store.DeliveryAttempts(r.Context(), h.ID, limit)
	if err != nil {
		return err
	}
	writeList(w, "deliveries", ds)
	return nil
}
