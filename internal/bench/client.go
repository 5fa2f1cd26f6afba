package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// client speaks the producer and admin API of one server.
type client struct {
	base string
	key  string
	hc   *http.Client
}

func newClient(base, key string, conns int) *client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &client{base: base, key: key, hc: &http.Client{Transport: tr}}
}

func (c *client) close() { c.hc.CloseIdleConnections() }

// do sends a request and decodes a 2xx JSON reply into out (if not nil).
func (c *client) do(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return &statusError{method: method, path: path, status: resp.Status, code: resp.StatusCode, body: bytes.TrimSpace(msg)}
	}
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// createBuild makes a build of template "bench" and returns its id.
func (c *client) createBuild(ctx context.Context) (string, error) {
	var b struct {
		ID string `json:"build_id"`
	}
	if err := c.do(ctx, "POST", "/v1/templates/bench/builds", []byte(`{}`), &b); err != nil {
		return "", err
	}
	return b.ID, nil
}

// statusError is a reply that is not 2xx; fleet's producers act on its
// code as a real producer would (retry, or resynchronise after a 409).
type statusError struct {
	method, path, status string
	code                 int
	body                 []byte
}

func (e *statusError) Error() string {
	hint := ""
	if e.code == http.StatusTooManyRequests {
		hint = " (the server's --rate-per-key limit: run it with --rate-per-key 0 to measure it)"
	}
	return fmt.Sprintf("%s %s: %s: %s%s", e.method, e.path, e.status, e.body, hint)
}

// nextOffset is the build's next offset a 409 carries, if it does.
func (e *statusError) nextOffset() (uint64, bool) {
	var b struct {
		Error struct {
			NextOffset *uint64 `json:"next_offset"`
		} `json:"error"`
	}
	if e.code != http.StatusConflict || json.Unmarshal(e.body, &b) != nil || b.Error.NextOffset == nil {
		return 0, false
	}
	return *b.Error.NextOffset, true
}

type appendReply struct {
	FirstOffset uint64 `json:"first_offset"`
	NextOffset  uint64 `json:"next_offset"`
}

func (c *client) append(ctx context.Context, buildID string, body []byte) (appendReply, error) {
	var r appendReply
	err := c.do(ctx, "POST", "/v1/templates/builds/"+buildID+"/logs", body, &r)
	return r, err
}

func (c *client) finish(ctx context.Context, buildID string) error {
	return c.do(ctx, "POST", "/v1/templates/builds/"+buildID+"/finish", []byte(`{"status":"ready"}`), nil)
}

// createKey makes a read key (needs an admin key) and returns its id and secret.
func (c *client) createKey(ctx context.Context, name string) (id, secret string, err error) {
	var k struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	// A build made by an admin key belongs to team default.
	body := fmt.Sprintf(`{"team":"default","scopes":["read"],"name":%q}`, name)
	if err := c.do(ctx, "POST", "/v1/keys", []byte(body), &k); err != nil {
		return "", "", err
	}
	return k.ID, k.Key, nil
}

func (c *client) deleteKey(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/v1/keys/"+id, nil, nil)
}
