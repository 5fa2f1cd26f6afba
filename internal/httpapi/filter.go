package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"buildlog"
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
	kind, level, phase, ok := scanLine(line)
	if !ok {
		// Not the layout the canonical encoder writes; decode it properly.
		var e struct {
			Kind  string `json:"kind"`
			Level string `json:"level"`
			Phase string `json:"phase"`
		}
		if json.Unmarshal(line, &e) != nil {
			return false
		}
		kind, level, phase = []byte(e.Kind), []byte(e.Level), []byte(e.Phase)
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

var (
	kindKey    = []byte(`,"kind":"`)
	levelKey   = []byte(`,"level":"`)
	messageKey = []byte(`,"message":"`)
	phaseKey   = []byte(`,"phase":"`)
)

// scanLine picks kind, level and phase out of a stored line without
// decoding it, relying on the canonical encoder's field order: build_id,
// template_id, offset, timestamp, kind, level, message, then phase if any,
// and only then anything nested. Inside a JSON string every '"' is
// escaped, so `,"kind":"` cannot occur in the strings before it, and the
// first match is the field itself. Values of kind, level and phase never
// need escaping. ok is false when the line is not laid out that way.
func scanLine(line []byte) (kind, level, phase []byte, ok bool) {
	i := bytes.Index(line, kindKey)
	if i < 0 {
		return nil, nil, nil, false
	}
	rest := line[i+len(kindKey):]
	if kind, rest, ok = plainString(rest); !ok {
		return nil, nil, nil, false
	}
	if rest, ok = bytes.CutPrefix(rest, levelKey); !ok {
		return nil, nil, nil, false
	}
	if level, rest, ok = plainString(rest); !ok {
		return nil, nil, nil, false
	}
	if rest, ok = bytes.CutPrefix(rest, messageKey); !ok {
		return nil, nil, nil, false
	}
	// Skip the message: it ends at the first '"' not escaped.
	j := 0
	for ; j < len(rest); j++ {
		if rest[j] == '\\' {
			j++
			continue
		}
		if rest[j] == '"' {
			break
		}
	}
	if j >= len(rest) {
		return nil, nil, nil, false
	}
	rest = rest[j+1:]
	if rest, found := bytes.CutPrefix(rest, phaseKey); found {
		if phase, _, ok = plainString(rest); !ok {
			return nil, nil, nil, false
		}
	}
	return kind, level, phase, true
}

// plainString returns the bytes up to the closing quote of a string value
// that has no escapes, and what follows the quote.
func plainString(b []byte) (val, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '"')
	if i < 0 || bytes.IndexByte(b[:i], '\\') >= 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}
