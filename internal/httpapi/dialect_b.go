package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"

	"buildlog"
	"buildlog/internal/wire"
)

// buildEvents is dialect B: GET /templates/{namespace}/{name}/{version}/build/events,
// the log of the newest build of that template version as
// {"ts","level","phase","source","line"} frames with no event type, so
// that EventSource.onmessage gets them. It always follows and closes after
// the terminal frame.
func (a *API) buildEvents(w http.ResponseWriter, r *http.Request) error {
	ns, name, version := r.PathValue("namespace"), r.PathValue("name"), r.PathValue("version")
	// The route names no build, so a stream token is checked against the
	// build it claims and then held to the build the route resolves to.
	p, err := a.authenticate(r, buildlog.ScopeRead, claimedTokenBuild(r))
	if err != nil {
		return err
	}
	if !buildlog.ValidVersion(version) {
		return buildlog.Errorf(buildlog.EInvalid, "version: want semver MAJOR.MINOR.PATCH with optional -prerelease and +build, no leading v (e.g. 1.0.0), got %q", clipHeader(version))
	}
	if err := checkQuery(r); err != nil {
		return err
	}
	from, err := startOffset(r)
	if err != nil {
		return err
	}
	notFound := buildlog.Errorf(buildlog.ENotFound, "no build of template %s/%s/%s", ns, name, version)
	if !buildlog.ValidID(ns) || !buildlog.ValidID(name) {
		return notFound
	}
	b, err := a.cfg.Store.LatestBuild(r.Context(), p.teamFilter(), ns, name, version)
	if buildlog.ErrorCode(err) == buildlog.ENotFound {
		return notFound
	}
	if err != nil {
		return err
	}
	if p.buildID != "" && p.buildID != b.ID {
		// A newer build of the version has started since the token was made.
		return unauthorized("this stream token is for another build; the newest build of this version is another one")
	}
	s, release, err := a.begin(w, p, b, from, "text/event-stream; charset=utf-8")
	if s == nil {
		return err
	}
	var frame []byte
	ctx := r.Context() // the stream holds its context, not r (see stream)
	bid := b.ID        // nor the build
	// Every entry is a frame: B has no filter.
	emit := func(chunks []buildlog.Chunk) (wrote bool, err error) {
		if shareable(chunks) {
			// Every follower of the build at this offset sends the same
			// bytes: render them once.
			k := frameKey{build: bid, from: chunks[0].First, to: chunks[len(chunks)-1].End(), form: frameB}
			out, err := a.frames.get(k, func() ([]byte, error) {
				var out, frame []byte
				err := a.framesB(ctx, bid, chunks, &frame, func(off uint64, data []byte) error {
					out = appendSSE(out, off, "", data)
					return nil
				})
				return out, err
			})
			if err != nil {
				return false, err
			}
			return true, s.writeShared(out)
		}
		err = a.framesB(ctx, bid, chunks, &frame, func(off uint64, data []byte) error {
			s.sseFrame(off, "", data)
			wrote = true
			return s.maybeFlush()
		})
		if err != nil {
			return wrote, err
		}
		return wrote, s.flush()
	}
	a.stream(r, release, b, from, true, emit, s.sseKeepalive)
	return nil
}

// framesB calls fn with each entry of chunks as a dialect B frame's data,
// rendered in *frame (reused from call to call).
func (a *API) framesB(ctx context.Context, id string, chunks []buildlog.Chunk, frame *[]byte, fn func(off uint64, data []byte) error) error {
	var err error
	for _, c := range chunks {
		c.Lines(func(off uint64, line []byte) bool {
			var e bEntry
			if err = json.Unmarshal(line, &e); err != nil {
				return false
			}
			var fin *buildlog.Build
			if c.Terminal && off == c.End()-1 {
				// Only the finished build knows whether an `end` entry
				// ended in failure or a timeout, and the last phase seen
				// before it (which a resumed stream never saw).
				if fin, err = a.cfg.Store.Build(ctx, id); err != nil {
					return false
				}
			}
			*frame = e.appendFrame((*frame)[:0], fin)
			err = fn(off, *frame)
			return err == nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// bEntry is what a dialect B frame needs of an entry.
type bEntry struct {
	Timestamp string         `json:"timestamp"`
	Level     buildlog.Level `json:"level"`
	Message   string         `json:"message"`
	Phase     string         `json:"phase"`
	Source    *string        `json:"source"`
}

// appendFrame renders e as a frame's data; fin is the finished build when
// e is its terminal entry. Levels: debug becomes info (B has no debug);
// the terminal frame says how the build ended, in level and phase.
func (e *bEntry) appendFrame(dst []byte, fin *buildlog.Build) []byte {
	level, phase := string(e.Level), e.Phase
	if e.Level == buildlog.LevelDebug {
		level = string(buildlog.LevelInfo)
	}
	if fin != nil {
		switch fin.Status {
		case buildlog.StatusReady:
			level, phase = "success", "ready"
		case buildlog.StatusCancelled:
			level, phase = string(buildlog.LevelWarn), "cancel"
		case buildlog.StatusTimeout:
			level, phase = string(buildlog.LevelError), "timeout"
		default:
			level, phase = string(buildlog.LevelError), fin.LastPhase
		}
	}
	dst = append(dst, `{"ts":`...)
	dst = wire.AppendString(dst, e.Timestamp)
	dst = append(dst, `,"level":`...)
	dst = wire.AppendString(dst, level)
	if phase != "" {
		dst = append(dst, `,"phase":`...)
		dst = wire.AppendString(dst, phase)
	}
	if e.Source != nil {
		dst = append(dst, `,"source":`...)
		dst = wire.AppendString(dst, *e.Source)
	}
	dst = append(dst, `,"line":`...)
	dst = wire.AppendString(dst, e.Message)
	return append(dst, '}')
}

// claimedTokenBuild is the build a ?token= names, unverified: authenticate
// verifies the token against it, and buildEvents then requires the route
// to resolve to that same build. "" when there is no readable claim, which
// authenticate answers with 401.
func claimedTokenBuild(r *http.Request) string {
	tok := r.URL.Query().Get("token")
	rest, ok := strings.CutPrefix(tok, streamTokenPrefix)
	if !ok || r.Header.Get("Authorization") != "" {
		return ""
	}
	payload, _, _ := strings.Cut(rest, ".")
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return ""
	}
	id, _, _ := strings.Cut(string(raw), "|")
	return id
}
