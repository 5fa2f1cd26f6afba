package client

import (
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"time"

	"buildlog"
)

// NewBuild is a create-build request; every field is optional. Namespace,
// Name and Version name the template version dialect B serves.
type NewBuild struct {
	BuildID     string          `json:"build_id,omitempty"`
	Namespace   string          `json:"namespace,omitempty"`
	Name        string          `json:"name,omitempty"`
	Version     string          `json:"version,omitempty"`
	TotalSteps  int64           `json:"total_steps,omitempty"`
	MaxAttempts int64           `json:"max_attempts,omitempty"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	// Team is honoured only for an admin key.
	Team string `json:"team,omitempty"`
	// Secrets are masked as *** in every message appended to the build.
	Secrets []string `json:"secrets,omitempty"`
}

// CreateBuild creates a queued build of templateID. A build id the server
// already has is a conflict error. It is not retried: a retry after a lost
// answer would be a conflict with itself.
func (c *Client) CreateBuild(ctx context.Context, templateID string, nb NewBuild) (*buildlog.Build, error) {
	var b buildlog.Build
	if err := c.do(ctx, "POST", "/v1/templates/"+pathID(templateID)+"/builds", nb, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// Build returns the build with id; not_found when there is none the key
// may see.
func (c *Client) Build(ctx context.Context, id string) (*buildlog.Build, error) {
	var b buildlog.Build
	if err := c.do(ctx, "GET", "/v1/templates/builds/"+pathID(id), nil, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// BuildFilter selects builds to list; zero fields select all.
type BuildFilter struct {
	TemplateID string
	Status     buildlog.Status
	Limit      int    // 1..1000; 0 for the server's default (50)
	Cursor     string // NextCursor of the previous page
}

// BuildPage is one page of a listing, newest first. NextCursor is empty on
// the last page.
type BuildPage struct {
	Builds     []*buildlog.Build `json:"builds"`
	NextCursor string            `json:"next_cursor,omitempty"`
}

// Builds lists one page of the builds the key may see, newest first.
func (c *Client) Builds(ctx context.Context, f BuildFilter) (*BuildPage, error) {
	q := url.Values{}
	if f.TemplateID != "" {
		q.Set("template_id", f.TemplateID)
	}
	if f.Status != "" {
		q.Set("status", string(f.Status))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Cursor != "" {
		q.Set("cursor", f.Cursor)
	}
	path := "/v1/templates/builds"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var p BuildPage
	if err := c.do(ctx, "GET", path, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Finish is a request to end a build. Result, ResultMetadata and
// ErrorDetail must be JSON objects when set.
type Finish struct {
	Status         buildlog.Status `json:"status"`
	Message        string          `json:"message,omitempty"`
	Result         json.RawMessage `json:"result,omitempty"`
	ResultMetadata json.RawMessage `json:"result_metadata,omitempty"`
	ErrorDetail    json.RawMessage `json:"error_detail,omitempty"`
}

// Finish ends the build with a terminal status, appending its terminal
// entry. Finishing again with the same status is a no-op, so it is retried
// like an append when the server cannot be reached.
func (c *Client) Finish(ctx context.Context, id string, f Finish) (*buildlog.Build, error) {
	var b buildlog.Build
	err := c.retry(ctx, func() error {
		return c.do(ctx, "POST", "/v1/templates/builds/"+pathID(id)+"/finish", f, &b)
	})
	if err != nil {
		return nil, err
	}
	return &b, nil
}

// retry calls fn until it succeeds, fails for good (see Retryable) or ctx
// ends, waiting by c.Backoff (or the server's Retry-After) in between.
func (c *Client) retry(ctx context.Context, fn func() error) error {
	return c.retryN(ctx, 0, fn)
}

// retryN is retry giving up after max retries (0: no limit).
func (c *Client) retryN(ctx context.Context, max int, fn func() error) error {
	for attempt := 0; ; attempt++ {
		err := fn()
		if !Retryable(err) || (max > 0 && attempt >= max) {
			return err
		}
		d := c.Backoff.Delay(attempt)
		if ra := retryAfter(err); ra > d {
			d = ra
		}
		if sleep(ctx, d) != nil {
			return err // the last real failure says more than "context canceled"
		}
	}
}

func retryAfter(err error) time.Duration {
	if e, ok := err.(*buildlog.Error); ok && e.RetryAfter > 0 {
		return time.Duration(e.RetryAfter) * time.Second
	}
	return 0
}

// Duration is how long build b took, or has taken so far at now: from
// its created_at to its finished_at, the build's own timestamps, so that
// the CLI, the console and programs show the same figure for the same
// build (a build queued before its first append counts that wait too).
func Duration(b *buildlog.Build, now time.Time) time.Duration {
	end := now
	if b.FinishedAt != nil {
		end = *b.FinishedAt
	}
	if end.Before(b.CreatedAt) {
		return 0
	}
	return end.Sub(b.CreatedAt)
}
