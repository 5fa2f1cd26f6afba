package httpapi

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"buildlog"
	"buildlog/internal/wire"
)

// readBody reads a request body of at most MaxBody bytes and says which
// form it is in. Only JSON (or no content type) and, where ndjsonOK,
// application/x-ndjson are read.
func (a *API) readBody(w http.ResponseWriter, r *http.Request, ndjsonOK bool) (body []byte, ndjson bool, err error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		switch {
		case err != nil:
			return nil, false, buildlog.Errorf(buildlog.EUnsupported, "Content-Type %q is not a media type", ct)
		case mt == "application/json":
		case mt == "application/x-ndjson" && ndjsonOK:
			ndjson = true
		default:
			want := "application/json"
			if ndjsonOK {
				want += " or application/x-ndjson"
			}
			return nil, false, buildlog.Errorf(buildlog.EUnsupported, "Content-Type %s is not read here; send %s", mt, want)
		}
	}
	body, err = readAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBody), r.ContentLength, a.cfg.MaxBody)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, false, buildlog.Errorf(buildlog.ETooLarge, "body: over the %d-byte limit", a.cfg.MaxBody)
	}
	if err != nil {
		return nil, false, buildlog.Errorf(buildlog.EInvalid, "body: could not be read")
	}
	return body, ndjson, nil
}

// preallocMax bounds what readAll allocates before the body arrives.
const preallocMax = 1 << 20

// readAll is io.ReadAll sized by the request's Content-Length. io.ReadAll
// starts at 512 bytes and doubles: for a 1,000-entry batch (~160 KiB) that
// was ten allocations and copies, and the garbage made the runtime return
// and refetch memory from the OS (madvise was 10% of the server's CPU
// during ingest). The first allocation is capped at preallocMax so that a
// client announcing a large body it never sends does not make the server
// hold that much; past it the buffer grows as data arrives.
func readAll(r io.Reader, contentLength, limit int64) ([]byte, error) {
	size := int64(512)
	if contentLength > 0 && contentLength <= limit {
		size = min(contentLength+1, preallocMax) // +1: room to see EOF without growing
	}
	b := make([]byte, 0, size)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

// nowUTC is the server's clock in UTC at the microsecond, the precision
// every store keeps.
func (a *API) nowUTC() time.Time { return a.now().UTC().Truncate(time.Microsecond) }

func (a *API) createBuild(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authenticate(r, buildlog.ScopeWrite, "")
	if err != nil {
		return err
	}
	templateID := r.PathValue("template_id")
	if !buildlog.ValidID(templateID) {
		return buildlog.Errorf(buildlog.EInvalid, "template_id: want ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
	}
	body, _, err := a.readBody(w, r, false)
	if err != nil {
		return err
	}
	nb, err := wire.DecodeNewBuild(body)
	if err != nil {
		return err
	}
	team, err := p.teamFor(nb.Team)
	if err != nil {
		return err
	}
	id := newUUID()
	if nb.BuildID != nil {
		id = *nb.BuildID
	}
	b := nb.Build(id, templateID, team, a.nowUTC())
	if err := a.store.CreateBuild(r.Context(), b); err != nil {
		if buildlog.ErrorCode(err) == buildlog.EConflict {
			return buildlog.Errorf(buildlog.EConflict, "build %s already exists", id)
		}
		return err
	}
	writeJSON(w, http.StatusCreated, buildJSON(b))
	return nil
}

func newUUID() string {
	var u [16]byte
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func (a *API) appendLogs(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authenticateWith(r, buildlog.ScopeWrite, "", true)
	if err != nil {
		return err
	}
	id := r.PathValue("build_id")
	body, ndjson, err := a.readBody(w, r, true)
	if err != nil {
		return err
	}
	entries, first, err := wire.DecodeBatch(body, ndjson, a.cfg.Limits)
	if err != nil {
		return err
	}
	if h := r.Header.Get("Buildlog-First-Offset"); h != "" {
		n, err := strconv.ParseUint(h, 10, 64)
		if err != nil {
			return buildlog.Errorf(buildlog.EInvalid, "Buildlog-First-Offset: want an unsigned integer, got %q", clipHeader(h))
		}
		if first != nil && *first != n {
			return buildlog.Errorf(buildlog.EInvalid, "first_offset: the body says %d, Buildlog-First-Offset says %d", *first, n)
		}
		first = &n
	}
	b, err := a.appendTarget(r, p, id)
	if err != nil {
		return err
	}
	// An idempotent append's fingerprint is of the entries as sent. When
	// filling timestamps and masking cannot change them (every timestamp
	// given, no secrets), it is taken from the stored encoding instead of
	// encoding them twice.
	var hash []byte
	fromTails := first != nil && len(b.Secrets) == 0 && timestamped(entries)
	if first != nil && !fromTails {
		hash = wire.HashEntries(entries)
	}
	now := a.nowUTC()
	ts := buildlog.Timestamp(now)
	for i := range entries {
		if entries[i].Timestamp == "" {
			entries[i].Timestamp = ts
		}
	}
	maskSecrets(entries, b.Secrets)
	start := time.Now()
	batch := wire.NewBatch(entries, first, hash)
	if fromTails {
		batch.Hash = wire.HashTails(batch.Tails)
	}
	batch.Created = b.CreatedAt
	if p.key != nil {
		batch.KeyID = p.key.ID
	}
	res, err := a.store.Append(r.Context(), b.ID, batch, now)
	if err != nil {
		a.cache.forget(err, p, b.ID)
		if buildlog.ErrorCode(err) == buildlog.ENotFound {
			return buildlog.Errorf(buildlog.ENotFound, "build %s not found", id)
		}
		return err
	}
	if !res.Replayed {
		a.cfg.Metrics.Appended(res.Chunk.Count, len(res.Chunk.Data), time.Since(start))
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// timestamped reports whether every entry has its producer's timestamp.
func timestamped(entries []buildlog.Entry) bool {
	for i := range entries {
		if entries[i].Timestamp == "" {
			return false
		}
	}
	return true
}

func clipHeader(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// maskSecrets replaces, in messages, every occurrence of each secret, of
// each line of a multi-line secret (a key file logged line by line), and of
// each secret's base64 forms (standard and URL alphabets, padded or not),
// with ***. The longest pattern wins where patterns overlap, so a secret
// never leaks in part because a shorter pattern matched first.
func maskSecrets(entries []buildlog.Entry, secrets []string) {
	pats := maskPatterns(secrets)
	if len(pats) == 0 {
		return
	}
	args := make([]string, 0, 2*len(pats))
	for _, p := range pats {
		args = append(args, p, "***")
	}
	rep := strings.NewReplacer(args...)
	for i := range entries {
		entries[i].Message = rep.Replace(entries[i].Message)
	}
}

// minMaskLine is the shortest line of a multi-line secret masked on its
// own: masking every "}" or "--" of every log line would hide the log, not
// the secret. (A whole secret is masked whatever its length.)
const minMaskLine = 4

func maskPatterns(secrets []string) []string {
	seen := map[string]bool{}
	var pats []string
	add := func(p string) {
		if p != "" && !seen[p] {
			seen[p] = true
			pats = append(pats, p)
		}
	}
	for _, s := range secrets {
		add(s)
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			add(enc.EncodeToString([]byte(s)))
		}
		if strings.ContainsAny(s, "\r\n") {
			for line := range strings.Lines(s) {
				if line = strings.TrimSpace(line); len(line) >= minMaskLine {
					add(line)
				}
			}
		}
	}
	// strings.Replacer tries patterns in argument order at each position.
	slices.SortStableFunc(pats, func(a, b string) int { return len(b) - len(a) })
	return pats
}

func (a *API) finishBuild(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authenticate(r, buildlog.ScopeWrite, "")
	if err != nil {
		return err
	}
	id := r.PathValue("build_id")
	body, _, err := a.readBody(w, r, false)
	if err != nil {
		return err
	}
	f, err := wire.DecodeFinish(body)
	if err != nil {
		return err
	}
	if _, err := a.build(r, p, id); err != nil {
		return err
	}
	now := a.nowUTC()
	f.Timestamp = buildlog.Timestamp(now)
	b, _, err := a.store.Finish(r.Context(), id, f, now)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, buildJSON(b))
	return nil
}
