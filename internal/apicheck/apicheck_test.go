package apicheck_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"buildlog/internal/apicheck"
	"buildlog/internal/httpapi"
)

// The served document is valid OpenAPI 3.1 by the validator's own
// reading of the specification's schema.
func TestDocumentIsValidOpenAPI(t *testing.T) {
	if _, err := apicheck.New(httpapi.Document()); err != nil {
		t.Fatal(err)
	}
}

// The checker must be able to fail: a document that breaks the
// specification is refused.
func TestInvalidDocumentRefused(t *testing.T) {
	var doc map[string]any
	if err := json.Unmarshal(httpapi.Document(), &doc); err != nil {
		t.Fatal(err)
	}
	doc["info"] = map[string]any{"title": 42} // no version, and a title that is not a string
	b, _ := json.Marshal(doc)
	if _, err := apicheck.New(b); err == nil {
		t.Fatal("a document with a broken info object was accepted")
	}
}

func checker(t *testing.T) *apicheck.Checker {
	t.Helper()
	c, err := apicheck.New(httpapi.Document())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serve puts h behind the checker and makes one request; it returns what
// the checker reported.
func serve(t *testing.T, h http.HandlerFunc, method, path, body string, hdr ...string) []error {
	t.Helper()
	var got []error
	ts := httptest.NewServer(checker(t).Handler(h, func(err error) { got = append(got, err) }))
	defer ts.Close()
	req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	ts.Close() // waits for the handler, and so for the check
	return got
}

func jsonHandler(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(body))
	}
}

const okAppend = `{"first_offset":0,"next_offset":2}`

// A response shaped as the document says passes; the same response with
// a field renamed, a field missing, a wrong type, an undocumented status
// or content type does not. This is what keeps the handlers and the
// document together.
func TestResponseDrift(t *testing.T) {
	const path = "/v1/templates/builds/tb_1/logs"
	auth := []string{"Authorization", "Bearer k", "Content-Type", "application/json"}
	if errs := serve(t, jsonHandler(200, okAppend), "POST", path, `[{"message":"hi"}]`, auth...); len(errs) > 0 {
		t.Fatalf("a documented response was refused: %v", errs)
	}
	for name, h := range map[string]http.HandlerFunc{
		"renamed field": jsonHandler(200, `{"first_offset":0,"nextOffset":2}`),
		"missing field": jsonHandler(200, `{"first_offset":0}`),
		"wrong type":    jsonHandler(200, `{"first_offset":"0","next_offset":2}`),
		"status":        jsonHandler(202, okAppend),
		"error shape":   jsonHandler(404, `{"error":"not found"}`),
		"error code":    jsonHandler(404, `{"error":{"code":"missing","message":"no"}}`),
		"content type": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte(okAppend))
		},
	} {
		t.Run(name, func(t *testing.T) {
			if errs := serve(t, h, "POST", path, `[{"message":"hi"}]`, auth...); len(errs) == 0 {
				t.Fatal("a drifted response passed")
			}
		})
	}
}

// A request the server accepted must be one the document allows: a body
// the document refuses (an unknown field) answered 200 is a drift, the
// same body answered 400 is the server refusing bad input.
func TestAcceptedRequestDrift(t *testing.T) {
	const path = "/v1/templates/builds/tb_1/logs"
	auth := []string{"Authorization", "Bearer k", "Content-Type", "application/json"}
	bad := `[{"message":"hi","colour":"red"}]`
	if errs := serve(t, jsonHandler(200, okAppend), "POST", path, bad, auth...); len(errs) == 0 {
		t.Fatal("an accepted request with an undocumented field passed")
	}
	refused := jsonHandler(400, `{"error":{"code":"invalid","message":"entries[0].colour: unknown field"}}`)
	if errs := serve(t, refused, "POST", path, bad, auth...); len(errs) > 0 {
		t.Fatalf("a refused bad request was reported: %v", errs)
	}
	nd := "{\"message\":\"a\"}\n{\"message\":\"b\",\"level\":\"loud\"}\n"
	if errs := serve(t, jsonHandler(200, okAppend), "POST", path, nd, "Authorization", "Bearer k", "Content-Type", "application/x-ndjson"); len(errs) == 0 {
		t.Fatal("an accepted NDJSON request with a bad level passed")
	}
	// A request's last line needs no newline: the server stores it, so
	// the checker reads it too (found by FuzzAppendBody: a one-line body
	// without its newline was read as no entries at all).
	nd = "{\"message\":\"a\"}\n{\"message\":\"b\"}"
	ndAuth := []string{"Authorization", "Bearer k", "Content-Type", "application/x-ndjson"}
	if errs := serve(t, jsonHandler(200, okAppend), "POST", path, nd, ndAuth...); len(errs) > 0 {
		t.Fatalf("an NDJSON request whose last line has no newline was reported: %v", errs)
	}
	if errs := serve(t, jsonHandler(200, okAppend), "POST", path, "{\"message\":\"a\"}\n{\"level\":\"loud\"}", ndAuth...); len(errs) == 0 {
		t.Fatal("an accepted NDJSON request with a bad last line (no newline) passed")
	}
}

// Event streams are checked frame by frame against x-sse-data.
func TestSSEDrift(t *testing.T) {
	const path = "/v1/templates/builds/tb_1/logs"
	sse := func(frames ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
			var b bytes.Buffer
			b.WriteString("retry: 3000\n\n: keepalive\n\n")
			for _, f := range frames {
				b.WriteString(f + "\n\n")
			}
			w.Write(b.Bytes())
		}
	}
	entry := `{"build_id":"tb_1","template_id":"t","offset":0,"timestamp":"2026-03-17T00:00:12Z","kind":"message","level":"info","message":"hi"}`
	if errs := serve(t, sse("id: 0\nevent: log\ndata: "+entry), "GET", path, "", "Authorization", "Bearer k"); len(errs) > 0 {
		t.Fatalf("a documented stream was refused: %v", errs)
	}
	drifted := strings.Replace(entry, `"message":"hi"`, `"msg":"hi"`, 1)
	if errs := serve(t, sse("id: 0\nevent: log\ndata: "+drifted), "GET", path, "", "Authorization", "Bearer k"); len(errs) == 0 {
		t.Fatal("a stream with a renamed entry field passed")
	}
	if errs := serve(t, sse("id: 0\nevent: entry\ndata: "+entry), "GET", path, "", "Authorization", "Bearer k"); len(errs) == 0 {
		t.Fatal("a stream with the wrong event name passed")
	}
	// A stream cut short mid-frame is checked on its whole frames.
	cut := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		w.Write([]byte("retry: 3000\n\nid: 0\nevent: log\ndata: " + entry + "\n\nid: 1\nev"))
	}
	if errs := serve(t, cut, "GET", path, "", "Authorization", "Bearer k"); len(errs) > 0 {
		t.Fatalf("a stream cut mid-frame was refused: %v", errs)
	}
}

// A request to no documented route must get a JSON error.
func TestUnroutedRequests(t *testing.T) {
	if errs := serve(t, jsonHandler(404, `{"error":{"code":"not_found","message":"no route"}}`), "GET", "/v1/nope", ""); len(errs) > 0 {
		t.Fatalf("a JSON 404 for no route was reported: %v", errs)
	}
	if errs := serve(t, jsonHandler(200, `{}`), "GET", "/v1/nope", ""); len(errs) == 0 {
		t.Fatal("a 200 for an undocumented route passed")
	}
}

// A webhook delivery is held to the document's webhooks.
func TestDeliveryDrift(t *testing.T) {
	c := checker(t)
	build := `{"build_id":"tb_1","template_id":"t","team":"default","status":"ready","created_at":"2026-03-17T00:00:12Z",` +
		`"updated_at":"2026-03-17T00:00:13Z","next_offset":1,"entry_count":1,"kept_bytes":10}`
	body := `{"id":"evt_1","type":"build.finished","created_at":"2026-03-17T00:00:13Z","build":` + build + `}`
	h := http.Header{"Content-Type": {"application/json"}, "Buildlog-Event": {"build.finished"},
		"Buildlog-Delivery": {"evt_1"}, "Buildlog-Signature": {"t=1,v1=00"}}
	if err := c.CheckDelivery(h, []byte(body)); err != nil {
		t.Fatalf("a documented delivery was refused: %v", err)
	}
	if err := c.CheckDelivery(h, []byte(strings.Replace(body, `"kept_bytes"`, `"keptBytes"`, 1))); err == nil {
		t.Fatal("a delivery with a renamed build field passed")
	}
	h.Del("Buildlog-Signature")
	if err := c.CheckDelivery(h, []byte(body)); err == nil {
		t.Fatal("an unsigned delivery passed")
	}
	h.Set("Buildlog-Event", "build.exploded")
	if err := c.CheckDelivery(h, []byte(body)); err == nil {
		t.Fatal("an undocumented event type passed")
	}
}
