package client

import (
	"context"
	"time"

	"buildlog"
)

// NewKey is a key just created: the only time its secret (Key) is shown.
type NewKey struct {
	ID        string           `json:"id"`
	Key       string           `json:"key"`
	Team      string           `json:"team"`
	Scopes    []buildlog.Scope `json:"scopes"`
	Name      string           `json:"name"`
	CreatedAt time.Time        `json:"created_at"`
}

// CreateKey makes an API key for team with scopes (admin key needed).
func (c *Client) CreateKey(ctx context.Context, team string, scopes []buildlog.Scope, name string) (*NewKey, error) {
	in := struct {
		Team   string           `json:"team"`
		Scopes []buildlog.Scope `json:"scopes"`
		Name   string           `json:"name,omitempty"`
	}{team, scopes, name}
	var k NewKey
	if err := c.do(ctx, "POST", "/v1/keys", in, &k); err != nil {
		return nil, err
	}
	return &k, nil
}

// Keys lists every key, oldest first, without secrets (admin key needed).
func (c *Client) Keys(ctx context.Context) ([]*buildlog.Key, error) {
	var out struct {
		Keys []*buildlog.Key `json:"keys"`
	}
	if err := c.do(ctx, "GET", "/v1/keys", nil, &out); err != nil {
		return nil, err
	}
	return out.Keys, nil
}

// RevokeKey deletes the key with id at once; not_found if there is none.
func (c *Client) RevokeKey(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/v1/keys/"+pathID(id), nil, nil)
}
