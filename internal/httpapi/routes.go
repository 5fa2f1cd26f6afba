package httpapi

import (
	"net/http"

	"buildlog"
)

// route is one row of the route table: what the mux serves and what
// GET /openapi.json says about it. routes registers the table and the
// document is built from it, so a route cannot be served undocumented,
// nor documented unserved.
type route struct {
	pattern string // "METHOD /path", as http.ServeMux takes it
	h       handlerFunc
	raw     http.Handler // instead of h: served without the API's error and metrics layer
	op      *operation
	// served, when set, says whether this server serves the route (the
	// document lists it either way: another server of the same binary
	// may).
	served func(*API) bool
}

// table is every route the API serves.
func (a *API) table() []route {
	return []route{
		{pattern: "GET /healthz", raw: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		}), op: &operation{
			ID: "healthz", Tag: "operations", Auth: authNone,
			Summary:     "Liveness",
			Description: "The process is up. Needs no key.",
			Responses:   []response{jsonResp(200, "Alive: `{\"status\":\"ok\"}`.", "Health")},
		}},
		{pattern: "GET /readyz", h: a.ready, op: &operation{
			ID: "readyz", Tag: "operations", Auth: authNone,
			Summary:     "Readiness",
			Description: "The store answers (within 2 s). Needs no key.",
			Responses:   []response{jsonResp(200, "Ready: `{\"status\":\"ready\"}`.", "Health"), errResp(503)},
		}},
		{pattern: "GET /metrics", served: func(a *API) bool { return a.cfg.Metrics != nil },
			raw: metricsHandler(a), op: &operation{
				ID: "metrics", Tag: "operations", Auth: authNone,
				Summary: "Prometheus metrics",
				Description: "Needs no key: scrapers carry none, and the figures name no build, team or key. " +
					"Among them `buildlog_log_omitted_bytes_total`, the bytes the size cap dropped.",
				Responses: []response{textResp(200, "The Prometheus text exposition format.", "text/plain")},
			}},
		{pattern: "GET /openapi.json", raw: http.HandlerFunc(a.serveDocument), op: &operation{
			ID: "openapi", Tag: "operations", Auth: authNone,
			Summary:     "This document",
			Description: "The OpenAPI 3.1 document of every route. Needs no key.",
			Responses: []response{{Status: 200, Desc: "The document.",
				Content: map[string]any{"application/json": schemaObj(map[string]any{"type": "object"})}}},
		}},

		{pattern: "POST /v1/templates/{template_id}/builds", h: a.createBuild, op: &operation{
			ID: "createBuild", Tag: "producer", Auth: authKey, Scope: buildlog.ScopeWrite,
			Summary: "Create a build",
			Description: "Creates a `queued` build of the template. A build belongs to the team of the key that created it " +
				"(for an admin key: the body's `team`, or `default`).",
			Params: []param{{Name: "template_id", In: "path", Required: true,
				Desc: "The template being built.", Schema: idSchema}},
			Body:      jsonBody("Every field optional; an empty body is `{}`.", "NewBuild", false),
			Responses: []response{jsonResp(201, "The build.", "Build"), errResp(400), errResp(403), errResp(409), errResp(413), errResp(415)},
		}},
		{pattern: "POST /v1/templates/builds/{build_id}/logs", h: a.appendLogs, op: &operation{
			ID: "appendLogs", Tag: "producer", Auth: authKey, Scope: buildlog.ScopeWrite,
			Summary: "Append a batch of entries",
			Description: "A batch is atomic: all of it is stored, with contiguous offsets, or none of it. " +
				"The first append moves the build from `queued` to `building`; appending to a finished build is a `409`. " +
				"Errors name the entry and field at fault (`entries[3].level: ...`).\n\n" +
				"With `first_offset` (in the body, or the `Buildlog-First-Offset` header for NDJSON) the append is an idempotent retry: " +
				"stored only if it is the build's next offset; a batch of the same entries (as sent, before the server filled in timestamps " +
				"or masked secrets) already stored from there is answered as the first time, storing nothing twice; otherwise `409` with " +
				"`next_offset` in the error body. A retry of a batch the size cap has since dropped is a `409` with `next_offset`: the cap " +
				"drops a batch only after far more newer entries than a producer has in flight while it retries.",
			Params: []param{refParam("BuildID"), {Name: "Buildlog-First-Offset", In: "header",
				Desc:   "The `first_offset` of an NDJSON body (for a JSON body it must agree with the body's, if both are given).",
				Schema: map[string]any{"type": "string", "pattern": "^[0-9]+$"}}},
			Body: &reqBody{Required: true, Desc: "A JSON array of entries, `{\"entries\":[...],\"first_offset\":N}`, or NDJSON (one entry a line). " +
				"At most `--max-batch` entries (10,000 by default) and `--max-body` bytes (16 MiB).",
				Content: map[string]any{
					"application/json": schemaObj(map[string]any{"oneOf": []any{
						map[string]any{"type": "array", "minItems": 1, "items": ref("EntryInput")},
						ref("AppendBatch"),
					}}),
					"application/x-ndjson": schemaObj(map[string]any{
						"type": "array", "minItems": 1, "items": ref("EntryInput"),
						"description": "One EntryInput object a line; blank lines are skipped. (The schema describes the sequence of lines.)",
					}),
				}},
			Responses: []response{jsonResp(200, "The offsets the batch got.", "AppendResult"),
				errResp(400), errResp(404), {Status: 409, Desc: "`conflict`: the build is finished, or `first_offset` is not its next offset (the error then carries `next_offset`).",
					Content: map[string]any{"application/json": schemaObj(ref("Error"))}},
				errResp(413), errResp(415)},
		}},
		{pattern: "POST /v1/templates/builds/{build_id}/finish", h: a.finishBuild, op: &operation{
			ID: "finishBuild", Tag: "producer", Auth: authKey, Scope: buildlog.ScopeWrite,
			Summary: "Finish a build",
			Description: "Appends the terminal entry (kind `cancelled` for `cancelled`, `end` otherwise; level `error` unless `ready`; " +
				"`result`, `result_metadata` and `error_detail` as given) and sets the status in one atomic step; the log is then sealed. " +
				"Finishing again with the same status is a no-op `200`; with another status a `409`. " +
				"A build whose producer goes silent for `--idle-timeout` (30 minutes by default) is finished by the server as `timeout`.",
			Params:    []param{refParam("BuildID")},
			Body:      jsonBody("The terminal status and what the terminal entry carries.", "Finish", true),
			Responses: []response{jsonResp(200, "The finished build.", "Build"), errResp(400), errResp(404), errResp(409), errResp(413), errResp(415)},
		}},
		{pattern: "GET /v1/templates/builds/{build_id}", h: a.getBuild, op: &operation{
			ID: "getBuild", Tag: "builds", Auth: authKeyOrToken, Scope: buildlog.ScopeRead,
			Summary:   "Get a build",
			Params:    []param{refParam("BuildID")},
			Responses: []response{jsonResp(200, "The build.", "Build"), errResp(404)},
		}},
		{pattern: "GET /v1/templates/builds", h: a.listBuilds, op: &operation{
			ID: "listBuilds", Tag: "builds", Auth: authKey, Scope: buildlog.ScopeRead,
			Summary:     "List builds",
			Description: "Newest first; the key's team's builds (every team's for an admin key).",
			Params: []param{
				{Name: "template_id", In: "query", Desc: "Only this template's builds.", Schema: map[string]any{"type": "string"}},
				{Name: "status", In: "query", Desc: "Only builds in this status.", Schema: ref("Status")},
				refParam("Limit"),
				{Name: "cursor", In: "query", Desc: "A `next_cursor` from the previous page.", Schema: map[string]any{"type": "string"}},
			},
			Responses: []response{jsonResp(200, "A page of builds.", "BuildList"), errResp(400)},
		}},
		{pattern: routeStreamLogs, h: a.streamLogs, op: dialectAOp},
		{pattern: "POST /v1/templates/builds/{build_id}/stream-token", h: a.createStreamToken, op: &operation{
			ID: "createStreamToken", Tag: "builds", Auth: authKey, Scope: buildlog.ScopeRead,
			Summary: "Make a stream token",
			Description: "A short-lived (`--stream-token-ttl`, 5 minutes by default), read-only token for this one build, accepted as " +
				"`?token=` on its read routes (`GET /v1/templates/builds/{build_id}`, its `/logs`, dialect B for its template version " +
				"while it is the newest build, and dialect C's two routes) and nowhere else. It is never an API key, and never logged.",
			Params:    []param{refParam("BuildID")},
			Responses: []response{jsonResp(201, "The token.", "StreamToken"), errResp(404)},
		}},

		{pattern: routeBuildEvents, h: a.buildEvents, op: dialectBOp},
		{pattern: "GET /v1/builds/{buildId}/logs", h: a.pollLogs, op: &operation{
			ID: "pollLogs", Tag: "dialect C", Auth: authKeyOrToken, Scope: buildlog.ScopeRead,
			Summary: "A page of log lines",
			Description: "Without `nextToken`: the most recent `limit` lines, oldest first (a live tail). With `startFromHead=true`: the " +
				"oldest `limit` lines. With `nextToken`: up to `limit` lines after the position it names. The terminal entry and any " +
				"omission notice are lines like any other. Calling again with `nextToken` until it is absent reads every later line " +
				"exactly once and stops when the build ends.",
			Params: []param{
				{Name: "buildId", In: "path", Required: true, Desc: "The build's id.", Schema: map[string]any{"type": "string"}},
				{Name: "limit", In: "query", Desc: "Lines per page, 1 to 10000 (anything else is a `400` naming the range).",
					Schema: map[string]any{"type": "integer", "minimum": 1, "maximum": 10000, "default": 500}},
				{Name: "startFromHead", In: "query", Desc: "Start at the oldest line rather than the live tail.", Schema: boolSchema},
				{Name: "nextToken", In: "query", Desc: "Opaque; from the previous page. Malformed, forged or another build's: `400`. Empty: none.",
					Schema: map[string]any{"type": "string"}},
			},
			Responses: []response{jsonResp(200, "A page.", "CLogPage"), errResp(400), errResp(404)},
		}},
		{pattern: "GET /v1/builds/{buildId}", h: a.pollBuild, op: &operation{
			ID: "pollBuild", Tag: "dialect C", Auth: authKeyOrToken, Scope: buildlog.ScopeRead,
			Summary:   "A build's status",
			Params:    []param{{Name: "buildId", In: "path", Required: true, Desc: "The build's id.", Schema: map[string]any{"type": "string"}}},
			Responses: []response{jsonResp(200, "The build in dialect C's shape.", "CBuildResponse"), errResp(404)},
		}},

		{pattern: "POST /v1/keys", h: a.createKey, op: &operation{
			ID: "createKey", Tag: "keys", Auth: authKey, Scope: buildlog.ScopeAdmin,
			Summary:     "Create a key",
			Description: "The secret is in this reply only; the server keeps a hash of it. A key with scope `admin` has the rights of `BUILDLOG_ADMIN_KEY`.",
			Body:        jsonBody("The key's team, scopes and name.", "NewKey", true),
			Responses:   []response{jsonResp(201, "The key, with its secret.", "CreatedKey"), errResp(400), errResp(413), errResp(415)},
		}},
		{pattern: "GET /v1/keys", h: a.listKeys, op: &operation{
			ID: "listKeys", Tag: "keys", Auth: authKey, Scope: buildlog.ScopeAdmin,
			Summary:   "List keys",
			Responses: []response{jsonResp(200, "Every key, without secrets.", "KeyList")},
		}},
		{pattern: "DELETE /v1/keys/{id}", h: a.deleteKey, op: &operation{
			ID: "deleteKey", Tag: "keys", Auth: authKey, Scope: buildlog.ScopeAdmin,
			Summary:     "Revoke a key",
			Description: "At once: the key's open streams end, and its next request is a `401`.",
			Params:      []param{{Name: "id", In: "path", Required: true, Desc: "The key's id.", Schema: map[string]any{"type": "string"}}},
			Responses:   []response{{Status: 204, Desc: "Revoked."}, errResp(404)},
		}},

		{pattern: "POST /v1/webhooks", h: a.createWebhook, op: &operation{
			ID: "createWebhook", Tag: "webhooks", Auth: authKey, Scope: buildlog.ScopeWrite,
			Summary: "Create a webhook",
			Description: "Deliveries of the team's build events start at once (see the document's `webhooks`). The `secret` that signs " +
				"them is in this reply only. Unknown events, a URL that is not `http(s)://`, or unknown fields are a `400`.",
			Body:      jsonBody("Where to deliver, which events, and (admin keys) for which team.", "NewWebhook", true),
			Responses: []response{jsonResp(201, "The hook, with its secret.", "CreatedWebhook"), errResp(400), errResp(403), errResp(413), errResp(415)},
		}},
		{pattern: "GET /v1/webhooks", h: a.listWebhooks, op: &operation{
			ID: "listWebhooks", Tag: "webhooks", Auth: authKey, Scope: buildlog.ScopeWrite,
			Summary:   "List webhooks",
			Responses: []response{jsonResp(200, "The team's hooks (every team's for an admin key), without secrets.", "WebhookList")},
		}},
		{pattern: "DELETE /v1/webhooks/{id}", h: a.deleteWebhook, op: &operation{
			ID: "deleteWebhook", Tag: "webhooks", Auth: authKey, Scope: buildlog.ScopeWrite,
			Summary:     "Delete a webhook",
			Description: "Deliveries stop at once (one under way may still reach the receiver).",
			Params:      []param{hookIDParam},
			Responses:   []response{{Status: 204, Desc: "Deleted."}, errResp(404)},
		}},
		{pattern: "GET /v1/webhooks/{id}/deliveries", h: a.listDeliveries, op: &operation{
			ID: "listDeliveries", Tag: "webhooks", Auth: authKey, Scope: buildlog.ScopeWrite,
			Summary: "List a webhook's recent delivery attempts",
			Params: []param{hookIDParam, {Name: "limit", In: "query", Desc: "At most this many attempts, 1 to 1000.",
				Schema: map[string]any{"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}}},
			Responses: []response{jsonResp(200, "Attempts, newest first.", "DeliveryList"), errResp(400), errResp(404)},
		}},

		// Anything else under the API prefixes is a JSON 404 (after auth,
		// so the shape of the API is not probed for free).
		{pattern: "/v1/", h: a.notFound},
		{pattern: "/templates/", h: a.notFound},
		// A wrong method on the routes that need no key is a JSON 404 as
		// well, not net/http's plain-text 405.
		{pattern: "/healthz", h: a.noRoute},
		{pattern: "/readyz", h: a.noRoute},
		{pattern: "/metrics", h: a.noRoute, served: func(a *API) bool { return a.cfg.Metrics != nil }},
		{pattern: "/openapi.json", h: a.noRoute},
	}
}

func (a *API) routes() {
	a.mux = http.NewServeMux()
	for _, rt := range a.table() {
		if rt.served != nil && !rt.served(a) {
			continue
		}
		if rt.raw != nil {
			a.mux.Handle(rt.pattern, rt.raw)
		} else {
			a.handle(rt.pattern, rt.h)
		}
	}
}

func (a *API) notFound(w http.ResponseWriter, r *http.Request) error {
	if _, err := a.authenticate(r, buildlog.ScopeRead, ""); err != nil {
		return err
	}
	return a.noRoute(w, r)
}

func (a *API) noRoute(w http.ResponseWriter, r *http.Request) error {
	return buildlog.Errorf(buildlog.ENotFound, "no route %s %s", r.Method, r.URL.Path)
}

func metricsHandler(a *API) http.Handler {
	if a.cfg.Metrics == nil {
		return nil
	}
	return a.cfg.Metrics.Handler()
}

// The stream routes, named because stream metrics are labelled by dialect
// and follow streams take their connections over (detach).
const (
	routeStreamLogs  = "GET /v1/templates/builds/{build_id}/logs"
	routeBuildEvents = "GET /templates/{namespace}/{name}/{version}/build/events"
)

var (
	idSchema    = map[string]any{"type": "string", "pattern": `^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`}
	boolSchema  = map[string]any{"type": "boolean", "default": false, "description": "`true` or `false` (also `1`, `0`)."}
	hookIDParam = param{Name: "id", In: "path", Required: true, Desc: "The hook's id.", Schema: map[string]any{"type": "string"}}
)

var dialectAOp = &operation{
	ID: "streamLogs", Tag: "dialect A", Auth: authKeyOrToken, Scope: buildlog.ScopeRead,
	Summary: "Read a build's log: SSE, NDJSON or a JSON page",
	Description: "Starts at `offset` (or its alias `cursor`), else at `Last-Event-ID` + 1, else at `tail` entries before the end, else at 0.\n\n" +
		"**SSE** (the default, and whatever `Accept` names no other form): `text/event-stream; charset=utf-8`, beginning with `retry: <ms>`; " +
		"each entry is `id: <offset>\\nevent: log\\ndata: <Entry JSON on one line>\\n\\n`. `follow=false`: the entries stored at request " +
		"time, then the stream ends. `follow=true`: the same, then live entries as they are committed, until the terminal entry has been " +
		"sent; then it ends. While following, a comment `: keepalive` at least every `--keepalive` (15 s). No entry is ever skipped, " +
		"duplicated or reordered, across the replay-to-live hand-over and across reconnects.\n\n" +
		"**NDJSON** (`Accept: application/x-ndjson`): the same entries, one Entry JSON a line; a blank line is the keepalive.\n\n" +
		"**JSON** (`Accept: application/json`): one page, `LogPage`, of up to `limit` entries.\n\n" +
		"Filters `level` (minimum), `kind` and `phase` apply to every form; the terminal entry and omission notices always pass them, so " +
		"streams still end.\n\n" +
		"A stream that starts at or past the end of a finished build is `204 No Content`: that stops a browser's `EventSource`, which " +
		"reconnects whenever a stream ends. (The JSON form answers a page with `done: true` instead.)",
	Params: []param{
		refParam("BuildID"),
		refParam("Offset"), refParam("Cursor"), refParam("LastEventID"),
		{Name: "tail", In: "query", Desc: "Start this many entries before the end of the log (at request time). Not with `offset`/`cursor`; a reconnect's `Last-Event-ID` wins over it.",
			Schema: ref("OffsetParam")},
		{Name: "follow", In: "query", Desc: "Keep the stream open for live entries until the terminal entry.", Schema: boolSchema},
		{Name: "limit", In: "query", Desc: "JSON form only: entries per page, 1 to 10000.",
			Schema: map[string]any{"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}},
		{Name: "level", In: "query", Desc: "Only entries of this level or above.", Schema: ref("Level")},
		{Name: "kind", In: "query", Desc: "Only entries of these kinds: a comma list of Kind values.",
			Schema: map[string]any{"type": "string", "pattern": `^\s*(start|message|cache|retry|warning|error|cancelled|end)\s*(,\s*(start|message|cache|retry|warning|error|cancelled|end)\s*)*$`}},
		{Name: "phase", In: "query", Desc: "Only entries of these phases: a comma list of Phase values.", Schema: map[string]any{"type": "string"}},
		{Name: "Accept", In: "header", Desc: "`text/event-stream` (default), `application/x-ndjson` or `application/json`; the highest `q` wins.",
			Schema: map[string]any{"type": "string"}},
	},
	Responses: []response{
		{Status: 200, Desc: "The entries, in the form `Accept` chose.", Content: map[string]any{
			"text/event-stream": schemaObj(map[string]any{"type": "string",
				"description": "Events `id: <offset>`, `event: log`, `data: <Entry>`, and `: keepalive` comments.",
				"x-sse-event": "log", "x-sse-data": "#/components/schemas/Entry"}),
			"application/x-ndjson": schemaObj(map[string]any{"type": "array", "items": ref("Entry"),
				"description": "One Entry a line. (The schema describes the sequence of lines.)"}),
			"application/json": schemaObj(ref("LogPage")),
		}},
		{Status: 204, Desc: "A stream (SSE or NDJSON) that starts at or past the end of a finished build: nothing will ever come."},
		errResp(400), errResp(404),
	},
}

var dialectBOp = &operation{
	ID: "buildEvents", Tag: "dialect B", Auth: authKeyOrToken, Scope: buildlog.ScopeRead,
	Summary: "Follow the newest build of a template version",
	Description: "Streams the log of the newest build of `namespace/name/version` (`404` if there is none) as SSE frames " +
		"`id: <offset>\\ndata: <BFrame JSON>\\n\\n`, with no `event:` line, so a browser's `EventSource.onmessage` gets them. " +
		"The stream begins with `retry: <ms>`, always follows, sends `: keepalive` comments while waiting, and closes after the " +
		"terminal frame. An omission notice is a `warn` frame. `Last-Event-ID` (or `offset`, `cursor`) resumes; a resume at or past " +
		"the end of a finished build is a `204`. A stream token is accepted for the build that is the version's newest.",
	Params: []param{
		{Name: "namespace", In: "path", Required: true, Desc: "The template's namespace.", Schema: map[string]any{"type": "string"}},
		{Name: "name", In: "path", Required: true, Desc: "The template's name.", Schema: map[string]any{"type": "string"}},
		{Name: "version", In: "path", Required: true, Desc: "Semver `MAJOR.MINOR.PATCH[-pre][+build]`, no leading `v`; another form is a `400`.",
			Schema: map[string]any{"type": "string"}},
		refParam("Offset"), refParam("Cursor"), refParam("LastEventID"),
	},
	Responses: []response{
		{Status: 200, Desc: "The frames.", Content: map[string]any{
			"text/event-stream": schemaObj(map[string]any{"type": "string",
				"description": "Events `id: <offset>`, `data: <BFrame>` (no `event:` line), and `: keepalive` comments.",
				"x-sse-event": "", "x-sse-data": "#/components/schemas/BFrame"}),
		}},
		{Status: 204, Desc: "A resume at or past the end of a finished build."},
		errResp(400), errResp(404),
	},
}
