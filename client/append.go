package client

import (
	"bytes"
	"context"
	"strings"
	"unicode/utf8"

	"buildlog"
	"buildlog/internal/wire"
)

// Append stores entries as one atomic batch starting at offset first, the
// build's next offset as the caller knows it (Build's NextOffset, or the
// NextOffset of the previous append). When the server cannot be reached or
// answers 429/5xx it retries with backoff until ctx ends: the server stores
// a batch only at its first_offset and answers a repeat of a stored batch
// as it did the first time, so a retry after a lost answer never stores the
// entries twice. A conflict error (with NextOffset set) means the log's
// next offset is not first: another producer appended, or first was wrong.
//
// Entries without a Timestamp take the server's clock; a retry of them is
// still recognised, since the server compares entries as they were sent.
func (c *Client) Append(ctx context.Context, buildID string, first uint64, entries []buildlog.Entry) (buildlog.AppendResult, error) {
	body, err := wire.AppendBody(nil, first, entries)
	if err != nil {
		return buildlog.AppendResult{}, err
	}
	var res buildlog.AppendResult
	err = c.retry(ctx, func() error {
		return c.appendOnce(ctx, buildID, body, &res)
	})
	return res, err
}

func (c *Client) appendOnce(ctx context.Context, buildID string, body []byte, res *buildlog.AppendResult) error {
	return c.doBody(ctx, "POST", "/v1/templates/builds/"+pathID(buildID)+"/logs", bytes.NewReader(body), res)
}

// SplitMessage cuts s into pieces of at most max bytes, at UTF-8
// character boundaries, so a line longer than the server's message limit
// becomes several entries rather than a rejected batch. Invalid UTF-8 is
// replaced first (as the server would), so lengths are what it measures.
func SplitMessage(s string, max int) []string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if max < utf8.UTFMax {
		max = utf8.UTFMax
	}
	if len(s) <= max {
		return []string{s}
	}
	var out []string
	for len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		out = append(out, s[:cut])
		s = s[cut:]
	}
	return append(out, s)
}
