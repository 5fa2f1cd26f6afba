package httpapi

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"buildlog"
)

// The OpenAPI document is the route table's operations (routes.go) put
// into openapi_base.json, which holds what routes share: the schemas of
// every body, the error replies, the parameters and the security schemes.

//go:embed openapi_base.json
var openapiBase []byte

// auth is what credentials an operation takes.
type auth int

const (
	authNone       auth = iota // no key: health, metrics, this document
	authKey                    // Authorization: Bearer <key>
	authKeyOrToken             // a key, or the build's stream token as ?token=
)

// operation is the document's entry for one route.
type operation struct {
	ID, Tag, Summary, Description string
	Auth                          auth
	Scope                         buildlog.Scope // the scope the key needs, for keyed routes
	Params                        []param
	Body                          *reqBody
	Responses                     []response
}

type param struct {
	Ref      string // a components/parameters name; the rest is then unused
	Name, In string
	Desc     string
	Required bool
	Schema   any
}

type reqBody struct {
	Desc     string
	Required bool
	Content  map[string]any // media type → media type object
}

type response struct {
	Status  int
	Ref     string // a components/responses name; the rest is then unused
	Desc    string
	Content map[string]any
}

func ref(schema string) map[string]any {
	return map[string]any{"$ref": "#/components/schemas/" + schema}
}

func schemaObj(s any) map[string]any { return map[string]any{"schema": s} }

func refParam(name string) param { return param{Ref: name} }

func jsonResp(status int, desc, schema string) response {
	return response{Status: status, Desc: desc, Content: map[string]any{"application/json": schemaObj(ref(schema))}}
}

func textResp(status int, desc, mediaType string) response {
	return response{Status: status, Desc: desc, Content: map[string]any{mediaType: schemaObj(map[string]any{"type": "string"})}}
}

func jsonBody(desc, schema string, required bool) *reqBody {
	return &reqBody{Desc: desc, Required: required, Content: map[string]any{"application/json": schemaObj(ref(schema))}}
}

// errNames are the components/responses of the error statuses.
var errNames = map[int]string{
	400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
	413: "TooLarge", 415: "UnsupportedMediaType", 429: "RateLimited", 503: "Unavailable",
}

func errResp(status int) response {
	name, ok := errNames[status]
	if !ok {
		panic(fmt.Sprintf("httpapi: no error response for status %d", status))
	}
	return response{Status: status, Ref: name}
}

// Every route that takes a key can answer these, whatever it does.
var keyedErrors = []int{401, 403, 429, 503}

func (o *operation) render() map[string]any {
	out := map[string]any{
		"operationId": o.ID,
		"tags":        []string{o.Tag},
		"summary":     o.Summary,
	}
	desc := o.Description
	switch o.Auth {
	case authNone:
		out["security"] = []any{}
	case authKey:
		out["security"] = []any{map[string]any{"bearerAuth": []string{}}}
	case authKeyOrToken:
		out["security"] = []any{map[string]any{"bearerAuth": []string{}}, map[string]any{"streamToken": []string{}}}
	}
	if o.Auth != authNone {
		out["x-buildlog-scope"] = string(o.Scope)
		desc = strings.TrimSpace(desc + "\n\nScope: `" + string(o.Scope) + "`.")
		if o.Auth == authKeyOrToken {
			desc += " Also accepts this build's stream token as `?token=`."
		}
	}
	if desc != "" {
		out["description"] = desc
	}
	if len(o.Params) > 0 {
		ps := make([]any, len(o.Params))
		for i, p := range o.Params {
			if p.Ref != "" {
				ps[i] = map[string]any{"$ref": "#/components/parameters/" + p.Ref}
				continue
			}
			m := map[string]any{"name": p.Name, "in": p.In, "schema": p.Schema}
			if p.Desc != "" {
				m["description"] = p.Desc
			}
			if p.Required {
				m["required"] = true
			}
			ps[i] = m
		}
		out["parameters"] = ps
	}
	if o.Body != nil {
		out["requestBody"] = map[string]any{"description": o.Body.Desc, "required": o.Body.Required, "content": o.Body.Content}
	}
	rs := map[string]any{}
	add := func(r response) {
		if r.Ref != "" {
			rs[strconv.Itoa(r.Status)] = map[string]any{"$ref": "#/components/responses/" + r.Ref}
			return
		}
		m := map[string]any{"description": r.Desc}
		if len(r.Content) > 0 {
			m["content"] = r.Content
		}
		rs[strconv.Itoa(r.Status)] = m
	}
	for _, r := range o.Responses {
		add(r)
	}
	if o.Auth != authNone {
		for _, s := range keyedErrors {
			if _, ok := rs[strconv.Itoa(s)]; !ok {
				add(errResp(s))
			}
		}
	}
	out["responses"] = rs
	return out
}

// webhookOps are the document's webhooks: what a receiver gets.
func webhookOps() map[string]any {
	hdr := func(name, desc string) map[string]any {
		return map[string]any{"name": name, "in": "header", "required": true, "description": desc, "schema": map[string]any{"type": "string"}}
	}
	out := map[string]any{}
	for _, typ := range buildlog.EventTypes {
		out[typ] = map[string]any{"post": map[string]any{
			"operationId": "webhook_" + strings.ReplaceAll(typ, ".", "_"),
			"summary":     "The `" + typ + "` event, POSTed to a hook's URL",
			"description": "The body is the event with the build as the API shows it at that moment. A `2xx` within 10 s is delivered; " +
				"anything else (or no answer) is retried with exponential backoff and jitter (about 1 s, 2 s, 4 s ... capped at 10 minutes) " +
				"for `--webhook-max-age` (24 h by default), then recorded as given up. Delivery is at least once: receivers de-duplicate " +
				"by the event `id`. Redirects are not followed.",
			"parameters": []any{
				hdr("Buildlog-Event", "The event type: `"+typ+"`."),
				hdr("Buildlog-Delivery", "The event id, the same on every attempt."),
				hdr("Buildlog-Signature", "`t=<unix seconds>,v1=<hex>`: `<hex>` is HMAC-SHA256 with the hook's secret over `<t>.<body>`."),
			},
			"requestBody": map[string]any{"required": true, "content": map[string]any{"application/json": schemaObj(ref("WebhookEvent"))}},
			"responses": map[string]any{
				"2XX":     map[string]any{"description": "Delivered."},
				"default": map[string]any{"description": "Not delivered: retried."},
			},
		}}
	}
	return out
}

// splitPattern is a mux pattern's method and path.
func splitPattern(pattern string) (method, path string) {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		return "", pattern
	}
	return method, path
}

// buildDocument renders the document of the routes in t.
func buildDocument(t []route) ([]byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(openapiBase, &doc); err != nil {
		return nil, fmt.Errorf("openapi_base.json: %w", err)
	}
	paths := map[string]map[string]any{}
	for _, rt := range t {
		if rt.op == nil {
			continue
		}
		method, path := splitPattern(rt.pattern)
		if method == "" {
			return nil, fmt.Errorf("route %q: a documented route needs a method", rt.pattern)
		}
		if paths[path] == nil {
			paths[path] = map[string]any{}
		}
		paths[path][strings.ToLower(method)] = rt.op.render()
	}
	doc["paths"] = paths
	doc["webhooks"] = webhookOps()
	return json.MarshalIndent(doc, "", "  ")
}

var (
	docOnce  sync.Once
	docBytes []byte
	docErr   error
)

// Document is the OpenAPI 3.1 document GET /openapi.json serves. It does
// not depend on the configuration: a route a server does not serve (such
// as /metrics without metrics) is still one of the API's.
func Document() []byte {
	docOnce.Do(func() {
		docBytes, docErr = buildDocument((&API{}).table())
		docBytes = append(docBytes, '\n')
	})
	if docErr != nil {
		panic(docErr) // the embedded base or the table is broken: a build-time bug, caught by the tests
	}
	return docBytes
}

func (a *API) serveDocument(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(Document())
}
