package httpapi

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"buildlog"
	"buildlog/internal/wire"
)

// filter selects entries by level, kind and phase (dialect A's extension).
// The zero filter matches everything and costs nothing: unfiltered streams
// never look inside the stored lines.
type filter struct {
	minLevel int             // rank of the minimum level; 0 (debug) admits all
	kinds    []buildlog.Kind // nil: any kind
	phases   []string        // nil: any phase, with or without one
}

// parseFilter reads level, kind and phase. kind and phase take a comma
// list (any of them matches); every value must be one a producer could
// have written, so a typo is a 400 rather than a silently empty stream.
func parseFilter(r *http.Request) (filter, error) {
	q := r.URL.Query()
	var f filter
	if q.Has("level") {
		rank := buildlog.Level(q.Get("level")).Rank()
		if rank < 0 {
			return f, buildlog.Errorf(buildlog.EInvalid, "level: want one of debug, info, warn, error (the minimum level), got %q", clipHeader(q.Get("level")))
		}
		f.minLevel = rank
	}
	if q.Has("kind") {
		for _, k := range strings.Split(q.Get("kind"), ",") {
			kind := buildlog.Kind(strings.TrimSpace(k))
			if !slices.Contains(buildlog.Kinds, kind) {
				return f, buildlog.Errorf(buildlog.EInvalid, "kind: want a comma list of start, message, cache, retry, warning, error, cancelled, end; got %q", clipHeader(q.Get("kind")))
			}
			f.kinds = append(f.kinds, kind)
		}
	}
	if q.Has("phase") {
		for _, p := range strings.Split(q.Get("phase"), ",") {
			p = strings.TrimSpace(p)
			if !buildlog.ValidPhase(p) {
				return f, buildlog.Errorf(buildlog.EInvalid, "phase: want a comma list of lowercase words matching "+buildlog.PhaseRule+", got %q", clipHeader(q.Get("phase")))
			}
			f.phases = append(f.phases, p)
		}
	}
	return f, nil
}

// checkQuery rejects a query string that url.Values would silently drop
// parts of: a bad percent-escape or a ';' in a pair makes that parameter
// vanish, and an offset that vanished would replay from 0. The 400 names
// the parameter when its name can be read.
func checkQuery(r *http.Request) error {
	raw := r.URL.RawQuery
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(k)
		if err != nil || strings.Contains(k, ";") {
			return buildlog.Errorf(buildlog.EInvalid, "query: malformed parameter name %q", clipHeader(k))
		}
		if _, err := url.QueryUnescape(v); err != nil || strings.Contains(v, ";") {
			return buildlog.Errorf(buildlog.EInvalid, "%s: malformed value %q (bad percent-escape or ';')", clipHeader(name), clipHeader(v))
		}
	}
	return nil
}

// active reports whether the filter can reject anything.
func (f *filter) active() bool { return f.minLevel > 0 || f.kinds != nil || f.phases != nil }

// keep reports whether the entry at off in c passes. The terminal entry
// always passes, so that a filtered stream still ends and a filtered page
// still reaches done, and so does an omission notice, so that no reader
// takes a gap in the offsets for entries that did not match.
func (f *filter) keep(c buildlog.Chunk, off uint64, line []byte) bool {
	if !f.active() || c.Notice || (c.Terminal && off == c.End()-1) {
		return true
	}
	kind, level, phase, ok := wire.ScanLine(line)
	if !ok {
		return false
	}
	if buildlog.Level(level).Rank() < f.minLevel {
		return false
	}
	if f.kinds != nil && !slices.Contains(f.kinds, buildlog.Kind(kind)) {
		return false
	}
	if f.phases != nil && !slices.Contains(f.phases, string(phase)) {
		return false
	}
	return true
}
