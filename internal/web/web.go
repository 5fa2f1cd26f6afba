// Package web serves the browser console: static pages embedded in the
// binary that load without a key and read data through the public API.
//
// The pages hold no secrets and no data; the scripts ask the user for an
// API key once (kept in the tab's sessionStorage, never in a URL), trade
// it for a per-build stream token and read through /v1 like any client.
package web

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var files embed.FS

// asset is one embedded file, with what serving it needs precomputed.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

var assets = load()

func load() map[string]*asset {
	m := map[string]*asset{}
	err := fs.WalkDir(files, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ctype := mime.TypeByExtension(path.Ext(p))
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		m[strings.TrimPrefix(p, "static/")] = &asset{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("web: reading embedded files: " + err.Error()) // a broken build, not input
	}
	return m
}

// csp keeps the key in sessionStorage out of reach of injected markup: no
// inline script or style, nothing from another origin. The scripts build
// the DOM from text nodes, never from HTML strings of log data.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler serves /console/: the build list at /console/, a build's console
// at /console/builds/{build_id}, and their assets under /console/static/.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /console/{$}", page("list.html"))
	mux.HandleFunc("GET /console/builds/{build_id}", page("build.html"))
	mux.HandleFunc("GET /console/static/{file}", func(w http.ResponseWriter, r *http.Request) {
		a, ok := assets[r.PathValue("file")]
		if !ok || strings.HasSuffix(r.PathValue("file"), ".html") {
			notFound(w)
			return
		}
		serve(w, r, a)
	})
	mux.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		notFound(w)
	})
	return mux
}

func page(name string) http.HandlerFunc {
	a := assets[name]
	return func(w http.ResponseWriter, r *http.Request) { serve(w, r, a) }
}

func notFound(w http.ResponseWriter) {
	headers(w)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusNotFound)
	w.Write([]byte("404 page not found; the console lives at /console/\n"))
}

func headers(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// serve answers with a, revalidated on every load (no-cache + ETag): an
// upgraded server must never run with a stale script, and a 304 is cheap.
func serve(w http.ResponseWriter, r *http.Request, a *asset) {
	headers(w)
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(a.body)))
}
