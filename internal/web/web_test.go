package web

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, path string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	Handler().ServeHTTP(w, req)
	return w
}

func TestPages(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/console/", "text/html", `src="static/list.js"`},
		{"/console/builds/tb_1", "text/html", `src="../static/build.js"`},
		{"/console/builds/some.build-id_2", "text/html", `id="log"`},
		{"/console/static/build.js", "text/javascript", "from './network.js'"},
		{"/console/static/network.js", "text/javascript", "EventSource"},
		{"/console/static/model.js", "text/javascript", "export class Log"},
		{"/console/static/view.js", "text/javascript", "export class View"},
		{"/console/static/interaction.js", "text/javascript", "export class Interaction"},
		{"/console/static/list.js", "text/javascript", "/v1/templates/builds?"},
		{"/console/static/ansi.js", "text/javascript", "export function parse"},
		{"/console/static/common.js", "text/javascript", "sessionStorage"},
		{"/console/static/console.css", "text/css", "--row-h"},
		{"/console/static/favicon.svg", "image/svg+xml", "<svg"},
	} {
		w := get(t, tc.path)
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), tc.ctype) || !strings.Contains(w.Body.String(), tc.contains) {
			t.Errorf("GET %s: %d %q, body has %q: %v", tc.path, w.Code, w.Header().Get("Content-Type"), tc.contains, strings.Contains(w.Body.String(), tc.contains))
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("GET %s: CSP %q", tc.path, csp)
		}
	}
}

func TestNotFound(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"/console/nope", "/console/static/nope.js", "/console/static/build.html", "/console/builds/", "/console/builds/a/b"} {
		if w := get(t, path); w.Code != 404 {
			t.Errorf("GET %s: %d, want 404", path, w.Code)
		}
	}
	req := httptest.NewRequest("POST", "/console/", nil)
	w := httptest.NewRecorder()
	Handler().ServeHTTP(w, req)
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /console/: %d, want 405", w.Code)
	}
}

// Pages are revalidated on every load, so an upgraded server never runs
// stale scripts, and a revalidation is a cheap 304.
func TestRevalidation(t *testing.T) {
	t.Parallel()
	w := get(t, "/console/static/build.js")
	etag := w.Header().Get("ETag")
	if etag == "" || w.Header().Get("Cache-Control") != "no-cache" {
		t.Fatalf("ETag %q, Cache-Control %q", etag, w.Header().Get("Cache-Control"))
	}
	if w := get(t, "/console/static/build.js", "If-None-Match", etag); w.Code != http.StatusNotModified {
		t.Fatalf("revalidation: %d, want 304", w.Code)
	}
}

// Nothing is loaded from anywhere but the server itself.
func TestNoExternalReferences(t *testing.T) {
	t.Parallel()
	for name, a := range assets {
		for _, bad := range []string{"http://", "https://", "//cdn", "@import"} {
			body := string(a.body)
			if name == "favicon.svg" {
				body = strings.ReplaceAll(body, `xmlns="http://www.w3.org/2000/svg"`, "")
			}
			if strings.Contains(body, bad) {
				t.Errorf("%s contains %q", name, bad)
			}
		}
	}
}

// The scripts are ES modules importing one another by relative path:
// every import must be an embedded script, served from the same folder.
func TestModuleImports(t *testing.T) {
	t.Parallel()
	importRE := regexp.MustCompile(`(?m)^\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]`)
	seen := 0
	for name, a := range assets {
		if !strings.HasSuffix(name, ".js") {
			continue
		}
		for _, m := range importRE.FindAllStringSubmatch(string(a.body), -1) {
			seen++
			target, ok := strings.CutPrefix(m[1], "./")
			if !ok || strings.Contains(target, "/") || assets[target] == nil {
				t.Errorf("%s imports %q, which is not an embedded script beside it", name, m[1])
			}
		}
	}
	if seen < 10 {
		t.Errorf("found %d imports; the pattern no longer matches the scripts", seen)
	}
}
