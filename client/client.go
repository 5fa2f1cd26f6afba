// Package client is the Go client of a buildlog server: follow a build's
// log with automatic reconnect (Stream), append entries with idempotent
// retries (Append) or through a batching Writer, and manage builds and keys.
//
// Every error the server answers with is a *buildlog.Error carrying the
// server's code and message (use buildlog.ErrorCode and errors.As); a
// failure to reach the server is a *TransportError.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"buildlog"
)

// Client talks to one buildlog server with one API key. Its zero value is
// not usable; make one with New. A Client is safe for concurrent use.
type Client struct {
	base string // server URL without a trailing slash
	key  string
	http *http.Client

	// Backoff is the retry schedule of Stream, Append and Writer.
	Backoff Backoff
}

// New returns a client of the server at baseURL (e.g.
// "http://127.0.0.1:8080") using the API key key. httpClient may be nil for
// one with no overall timeout, which streams need.
func New(baseURL, key string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = &http.Client{}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), key: key, http: httpClient, Backoff: DefaultBackoff}
}

// URL is the server the client talks to.
func (c *Client) URL() string { return c.base }

// Backoff is an exponential retry schedule with jitter. Attempt n (from 0)
// waits a random time in [d/2, d] where d = min(Max, Min·2ⁿ): the jitter
// keeps the clients of a restarted server from returning all at once.
type Backoff struct {
	Min, Max time.Duration
}

// DefaultBackoff starts at 100 ms and tops out at 5 s.
var DefaultBackoff = Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}

// Delay is the wait before retry attempt n (from 0).
func (b Backoff) Delay(n int) time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = DefaultBackoff.Min
	}
	if hi < lo {
		hi = lo
	}
	d := lo
	for i := 0; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TransportError is a request that got no answer from the server: it could
// not connect, or the connection broke. Such requests are worth retrying.
type TransportError struct {
	URL string
	Err error
}

func (e *TransportError) Error() string {
	msg := e.Err.Error()
	// net/http's messages repeat the method and URL; the server is enough.
	var ue *url.Error
	if errors.As(e.Err, &ue) {
		msg = ue.Err.Error()
	}
	return fmt.Sprintf("cannot reach %s: %s", e.URL, msg)
}

func (e *TransportError) Unwrap() error { return e.Err }

// Retryable reports whether err may succeed when tried again: the server
// was unreachable, overloaded (429), or unavailable or failing (5xx).
// Errors that are the request's fault (4xx) are not, nor a cancelled
// context, nor a *DecodeError.
func Retryable(err error) bool {
	var de *DecodeError
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &de) {
		return false
	}
	var te *TransportError
	if errors.As(err, &te) {
		return true
	}
	switch buildlog.ErrorCode(err) {
	case buildlog.ERateLimited, buildlog.EUnavailable, buildlog.EInternal:
		return true
	}
	return false
}

// responseError turns a non-2xx answer into a *buildlog.Error with the
// server's code and message (and next_offset, Retry-After when given).
func responseError(res *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	var eb struct {
		Error struct {
			Code       string  `json:"code"`
			Message    string  `json:"message"`
			NextOffset *uint64 `json:"next_offset"`
		} `json:"error"`
	}
	e := &buildlog.Error{}
	if json.Unmarshal(body, &eb) == nil && eb.Error.Code != "" {
		e.Code, e.Message, e.NextOffset = eb.Error.Code, eb.Error.Message, eb.Error.NextOffset
	} else {
		e.Code = buildlog.StatusCode(res.StatusCode)
		e.Message = fmt.Sprintf("server answered %s", res.Status)
	}
	if s := res.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			e.RetryAfter = n
		}
	}
	return e
}

// newRequest makes an authenticated request to path (which may hold a query).
func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// send does req and returns the response when it is 2xx; otherwise the
// server's error, or a *TransportError when there was no answer.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	res, err := c.http.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, &TransportError{URL: c.base, Err: err}
	}
	if res.StatusCode/100 != 2 {
		defer res.Body.Close()
		return nil, responseError(res)
	}
	return res, nil
}

// do sends a JSON request (in may be nil) and decodes a JSON answer into
// out (which may be nil).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	return c.doBody(ctx, method, path, body, out)
}

// doBody is do with the request body already encoded (nil for none).
func (c *Client) doBody(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	res, err := c.send(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if out == nil {
		io.Copy(io.Discard, res.Body)
		return nil
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return &TransportError{URL: c.base, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	return nil
}

// pathID escapes an id for use as one path segment.
func pathID(id string) string { return url.PathEscape(id) }
