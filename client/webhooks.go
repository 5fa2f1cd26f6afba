package client

import (
	"context"
	"strconv"

	"buildlog"
)

// NewWebhook is a hook just created: the only time its signing secret is
// shown.
type NewWebhook = buildlog.CreatedWebhook

// CreateWebhook subscribes url to events (nil for every event) of team's
// builds; team "" means the key's own team (or, for an admin key,
// "default"), and only an admin key may name one.
func (c *Client) CreateWebhook(ctx context.Context, url string, events []string, team string) (*NewWebhook, error) {
	in := struct {
		URL    string   `json:"url"`
		Events []string `json:"events,omitempty"`
		Team   string   `json:"team,omitempty"`
	}{url, events, team}
	var h NewWebhook
	if err := c.do(ctx, "POST", "/v1/webhooks", in, &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// Webhooks lists the hooks the key may manage, oldest first, without
// secrets.
func (c *Client) Webhooks(ctx context.Context) ([]*buildlog.Webhook, error) {
	var out struct {
		Webhooks []*buildlog.Webhook `json:"webhooks"`
	}
	if err := c.do(ctx, "GET", "/v1/webhooks", nil, &out); err != nil {
		return nil, err
	}
	return out.Webhooks, nil
}

// DeleteWebhook deletes the hook with id, and with it every delivery not
// yet made; not_found if there is none.
func (c *Client) DeleteWebhook(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/v1/webhooks/"+pathID(id), nil, nil)
}

// WebhookDeliveries lists the hook's most recent delivery attempts, newest
// first; limit 0 takes the server's default (50).
func (c *Client) WebhookDeliveries(ctx context.Context, id string, limit int) ([]*buildlog.DeliveryAttempt, error) {
	path := "/v1/webhooks/" + pathID(id) + "/deliveries"
	if limit > 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	var out struct {
		Deliveries []*buildlog.DeliveryAttempt `json:"deliveries"`
	}
	if err := c.do(ctx, "GET", path, nil, &out); err != nil {
		return nil, err
	}
	return out.Deliveries, nil
}
