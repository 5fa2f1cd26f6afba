package httpapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"buildlog/internal/httpapi"
	"buildlog/internal/metrics"
)

// docOperations is every "METHOD /path" the document has.
func docOperations(t *testing.T) map[string]bool {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(httpapi.Document(), &doc); err != nil {
		t.Fatal(err)
	}
	ops := map[string]bool{}
	for path, item := range doc.Paths {
		for method := range item {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options", "trace":
				ops[strings.ToUpper(method)+" "+path] = true
			}
		}
	}
	return ops
}

// Every route the API serves is in the document, and every operation in
// the document is a route: a route added without its entry, or an entry
// left behind by a removed route, fails here.
func TestDocumentCoversEveryRoute(t *testing.T) {
	ops := docOperations(t)
	for pattern, documented := range httpapi.Patterns() {
		method, _, hasMethod := strings.Cut(pattern, " ")
		switch {
		case !hasMethod:
			// Only the JSON 404s of the API's prefixes may be undocumented.
			if documented || !slices.Contains([]string{"/v1/", "/templates/", "/healthz", "/readyz", "/metrics", "/openapi.json"}, pattern) {
				t.Errorf("route %q: a route without a method is only for the fallbacks", pattern)
			}
		case !documented:
			t.Errorf("route %q (%s) has no document entry", pattern, method)
		case !ops[pattern]:
			t.Errorf("route %q is not in the document's paths", pattern)
		}
		delete(ops, pattern)
	}
	for op := range ops {
		t.Errorf("the document has %q, which no route serves", op)
	}
}

var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// The mux sends a request for each documented operation to that
// operation's route, not to another one or a fallback: the document's
// paths are the server's.
func TestDocumentedPathsReachTheirRoutes(t *testing.T) {
	s := newServer(t, func(c *httpapi.Config) { c.Metrics = metrics.New() })
	for op := range docOperations(t) {
		method, path, _ := strings.Cut(op, " ")
		concrete := pathParam.ReplaceAllStringFunc(path, func(p string) string {
			if p == "{version}" {
				return "1.0.0"
			}
			return "x1"
		})
		r, _ := http.NewRequest(method, "http://h"+concrete, nil)
		if got := s.api.RoutePattern(r); got != op {
			t.Errorf("%s %s goes to route %q, want %q", method, concrete, got, op)
		}
	}
}

// GET /openapi.json needs no key and serves the document.
func TestServesDocument(t *testing.T) {
	s := newServer(t)
	r := s.want(s.do("GET", "/openapi.json", "", nil), 200)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if !bytes.Equal(r.body, httpapi.Document()) {
		t.Fatal("served document differs from httpapi.Document()")
	}
	var doc struct {
		OpenAPI string         `json:"openapi"`
		Paths   map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.1.") {
		t.Fatalf("openapi %q (%v)", doc.OpenAPI, err)
	}
}

// docs/API.md, the reference people read, names every operation of the
// document as "METHOD /path", so a route cannot be added to one and not
// the other.
func TestReferenceCoversEveryRoute(t *testing.T) {
	ref, err := os.ReadFile("../../docs/API.md")
	if err != nil {
		t.Fatal(err)
	}
	for op := range docOperations(t) {
		if !bytes.Contains(ref, []byte(op)) {
			t.Errorf("docs/API.md does not name %s", op)
		}
	}
}

// A wrong method on a route that needs no key is a JSON 404, as it is on
// the API's routes, not net/http's plain-text 405.
func TestWrongMethodIsJSON(t *testing.T) {
	s := newServer(t, func(c *httpapi.Config) { c.Metrics = metrics.New() })
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/openapi.json"} {
		r := s.do("POST", path, "", nil)
		if r.code != 404 || !strings.Contains(r.errMessage(t), "no route POST "+path) {
			t.Errorf("POST %s: %s, want a JSON 404", path, r)
		}
	}
}
