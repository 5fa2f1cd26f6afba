package httpapi

import (
	"cmp"
	"net/http"
	"strconv"
	"time"

	"buildlog"
	"buildlog/internal/wire"
)

// Dialect C's page sizes, as its seed documents them.
const (
	defaultPollLimit = 500
	maxPollLimit     = 10000
)

// pollLogs is dialect C: GET /v1/builds/{buildId}/logs, a page of
// formatted lines {"logs":[...],"nextToken":"..."}. Without nextToken it
// is the live tail (the most recent limit lines, as the seed's polling
// loop expects) or, with startFromHead=true, the head; with nextToken the
// lines after the position it names. nextToken is left out only once a
// finished build's last line has been returned, so "call again with
// nextToken until it is absent" reads every later line exactly once.
func (a *API) pollLogs(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("buildId")
	p, err := a.authenticate(r, buildlog.ScopeRead, id)
	if err != nil {
		return err
	}
	if err := checkQuery(r); err != nil {
		return err
	}
	q := r.URL.Query()
	limit := defaultPollLimit
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > maxPollLimit {
			return buildlog.Errorf(buildlog.EInvalid, "limit: want an integer in the required range 1 to %d, got %q", maxPollLimit, clipHeader(q.Get("limit")))
		}
		limit = n
	}
	head, err := parseBool(r, "startFromHead", false)
	if err != nil {
		return err
	}
	// An empty nextToken is no token, so a shell loop may start with one.
	tok := q.Get("nextToken")
	var tokenAt uint64
	if tok != "" {
		if tokenAt, err = a.checkPageToken(id, tok); err != nil {
			return err
		}
	}
	b, err := a.build(r, p, id)
	if err != nil {
		return err
	}
	var from uint64
	switch {
	case tok != "":
		from = tokenAt
	case head:
		from = 0
	default:
		from = b.NextOffset - min(uint64(limit), b.NextOffset)
	}
	// The lines below the build's NextOffset, read once, never change; the
	// page and its token are both cut at that snapshot. The page is written
	// as it is read, as dialect A's JSON page is: 10,000 lines of 64 KiB
	// messages must not sit in memory. limit counts lines, not offsets: an
	// omission notice is one line at the end of the range it stands for,
	// so a page that meets one spans more offsets than lines (bounding
	// offsets instead gave a page starting in a range longer than limit no
	// line and a token back to where it started, forever).
	to := b.NextOffset
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	s := &streamWriter{w: w, rc: http.NewResponseController(w), buf: make([]byte, 0, 8<<10)}
	s.buf = append(s.buf, `{"logs":[`...)
	next, sent, n := from, false, 0
	if from < to {
		var lineErr, writeErr error
		err := a.scanLog(r.Context(), b, from, func(_ buildlog.Chunk, off uint64, line []byte) bool {
			if off >= to {
				return false
			}
			if n > 0 {
				s.buf = append(s.buf, ',')
			}
			if s.buf, lineErr = wire.AppendCLine(s.buf, line); lineErr != nil {
				return false
			}
			next = off + 1
			n++
			if len(s.buf) >= flushAt {
				sent = true
				if writeErr = s.flush(); writeErr != nil {
					return false
				}
			}
			return n < limit && next < to
		})
		if err == nil {
			err = cmp.Or(lineErr, writeErr) // a page cut short must not end as if whole
		}
		if err != nil {
			if !sent {
				return err // nothing written yet: a proper error reply
			}
			a.streamEnded(r, err)
			return nil
		}
	}
	s.buf = append(s.buf, ']')
	if next < b.NextOffset || !b.Status.Terminal() {
		s.buf = append(s.buf, `,"nextToken":`...)
		s.buf = wire.AppendString(s.buf, a.signPageToken(b.ID, next))
	}
	s.buf = append(s.buf, "}\n"...)
	if err := s.flush(); err != nil {
		a.streamEnded(r, err)
	}
	return nil
}

// cStatus maps build statuses to the seed's.
var cStatus = map[buildlog.Status]string{
	buildlog.StatusQueued:    "pending",
	buildlog.StatusBuilding:  "building",
	buildlog.StatusReady:     "success",
	buildlog.StatusFailed:    "failed",
	buildlog.StatusCancelled: "cancelled",
	buildlog.StatusTimeout:   "timeout",
}

// cBuild is a build as dialect C shows it: camelCase, times in UTC.
type cBuild struct {
	ID         string     `json:"id"`
	TemplateID string     `json:"templateId"`
	Namespace  string     `json:"namespace,omitempty"`
	Name       string     `json:"name,omitempty"`
	Version    string     `json:"version,omitempty"`
	Status     string     `json:"status"`
	CreatedAt  time.Time  `json:"createdAt"`
	UpdatedAt  time.Time  `json:"updatedAt"`
	StartedAt  *time.Time `json:"startedAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	LineCount  uint64     `json:"lineCount"`
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// pollBuild is dialect C's build status: GET /v1/builds/{buildId}.
func (a *API) pollBuild(w http.ResponseWriter, r *http.Request) error {
	b, err := a.readableBuild(r, r.PathValue("buildId"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]cBuild{"build": {
		ID: b.ID, TemplateID: b.TemplateID,
		Namespace: b.Namespace, Name: b.Name, Version: b.Version,
		Status:    cStatus[b.Status],
		CreatedAt: b.CreatedAt.UTC(), UpdatedAt: b.UpdatedAt.UTC(),
		StartedAt: utcPtr(b.StartedAt), FinishedAt: utcPtr(b.FinishedAt),
		LineCount: b.NextOffset,
	}})
	return nil
}
