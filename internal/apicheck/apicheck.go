// Package apicheck holds HTTP exchanges to an OpenAPI 3.1 document with
// a real validator (pb33f/libopenapi-validator). It is for tests: the
// HTTP tests put Handler in front of the server so that every response
// they see (and every request body the server accepts) is checked against
// GET /openapi.json, and the document cannot drift from the code. The
// server itself does not import it.
package apicheck

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	"github.com/pb33f/libopenapi-validator/content"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
)

// Checker validates documents, requests and responses.
type Checker struct {
	model *v3.Document
	// mu serialises validation: the validator's caches are not promised
	// to be safe for concurrent use, and tests send in parallel.
	mu      sync.Mutex
	v       validator.Validator
	vStatus validator.Validator // v without response bodies, for partial ones
	schemas schema_validation.SchemaValidator
	errorS  *base.Schema
}

// New parses doc, checks it against the OpenAPI specification's own
// schema, and returns a Checker for it. Every problem found in the
// document is in the error.
func New(doc []byte) (*Checker, error) {
	d, err := libopenapi.NewDocument(doc)
	if err != nil {
		return nil, fmt.Errorf("apicheck: parse: %w", err)
	}
	if v := d.GetVersion(); !strings.HasPrefix(v, "3.1") {
		return nil, fmt.Errorf("apicheck: openapi %q, want 3.1.x", v)
	}
	m, err := d.BuildV3Model()
	if err != nil {
		return nil, fmt.Errorf("apicheck: model: %w", err)
	}
	c := &Checker{model: &m.Model}
	opts := []config.Option{
		config.WithFormatAssertions(),
		config.WithBodyDecoder("application/x-ndjson", content.DecoderFunc(decodeNDJSON)),
		config.WithBodyDecoder("text/event-stream", content.DecoderFunc(c.decodeSSE)),
	}
	v, verrs := validator.NewValidator(d, opts...)
	if len(verrs) > 0 {
		return nil, fmt.Errorf("apicheck: validator: %w", errors.Join(verrs...))
	}
	c.v = v
	c.vStatus = validator.NewValidatorFromV3Model(&m.Model, append(opts, config.WithoutResponseBodyValidation())...)
	c.schemas = schema_validation.NewSchemaValidator(config.WithFormatAssertions())
	if ok, errs := c.v.ValidateDocument(); !ok {
		return nil, fmt.Errorf("apicheck: the document is not valid OpenAPI:\n%s", describe(errs))
	}
	if c.errorS = c.schema("#/components/schemas/Error"); c.errorS == nil {
		return nil, errors.New("apicheck: the document has no components.schemas.Error")
	}
	return c, nil
}

// schema resolves a local reference to a component schema.
func (c *Checker) schema(ref string) *base.Schema {
	name, ok := strings.CutPrefix(ref, "#/components/schemas/")
	if !ok || c.model.Components == nil || c.model.Components.Schemas == nil {
		return nil
	}
	p := c.model.Components.Schemas.GetOrZero(name)
	if p == nil {
		return nil
	}
	return p.Schema()
}

func describe(errs []*verrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "  - %s", e.Message)
		if e.Reason != "" && e.Reason != e.Message {
			fmt.Fprintf(&b, ": %s", e.Reason)
		}
		for _, se := range e.SchemaValidationErrors {
			loc := se.FieldPath
			if loc == "" {
				loc = se.KeywordLocation
			}
			fmt.Fprintf(&b, "\n      %s: %s", loc, se.Reason)
		}
		if e.SpecLine > 0 {
			fmt.Fprintf(&b, " (document line %d)", e.SpecLine)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// Exchange is one request and its response, bodies in full.
type Exchange struct {
	Request     *http.Request
	RequestBody []byte
	Status      int
	Header      http.Header
	Body        []byte
	// Partial says a JSON response body was cut short (the client left,
	// or it was too long to keep): only its status is checked. (A
	// stream's body may be any prefix: only its whole frames are checked.)
	Partial bool
	// ResponseOnly skips the check of an accepted request.
	ResponseOnly bool
}

// Check returns what is wrong with x by the document, or nil.
//
// Every response is checked: its status must be documented for the
// operation, its Content-Type among that status's, and its body valid by
// the schema (SSE and NDJSON bodies frame by frame). A request the
// server accepted (2xx) must be valid by the document too; one it refused
// may well not be, that being why it was refused. A request to no
// documented route must get a JSON error.
func (c *Checker) Check(x *Exchange) error {
	req := x.Request.Clone(x.Request.Context())
	req.Body = io.NopCloser(bytes.NewReader(x.RequestBody))
	req.ContentLength = int64(len(x.RequestBody))
	res := &http.Response{StatusCode: x.Status, Header: x.Header, Request: req,
		Body: io.NopCloser(bytes.NewReader(x.Body))}
	v := c.v
	if x.Partial {
		v = c.vStatus
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []*verrors.ValidationError
	if _, rerrs := v.ValidateHttpResponse(req, res); len(rerrs) > 0 {
		if routeMissing(rerrs) {
			return c.checkUnrouted(x)
		}
		errs = append(errs, rerrs...)
	}
	if x.Status >= 200 && x.Status < 300 && !x.ResponseOnly {
		req.Body = io.NopCloser(bytes.NewReader(x.RequestBody))
		if _, qerrs := c.v.ValidateHttpRequestSync(req); len(qerrs) > 0 {
			for _, e := range qerrs {
				e.Message = "accepted request: " + e.Message
			}
			errs = append(errs, qerrs...)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s %s → %d %s, not as the document says:\n%s",
			x.Request.Method, x.Request.URL.RequestURI(), x.Status, x.Header.Get("Content-Type"), describe(errs))
	}
	return nil
}

func routeMissing(errs []*verrors.ValidationError) bool {
	for _, e := range errs {
		if e.ValidationType == "path" && (e.ValidationSubType == "missing" || e.ValidationSubType == "missingOperation") {
			return true
		}
	}
	return false
}

// checkUnrouted holds a request to no documented route to the API's
// rule for those: a JSON error.
func (c *Checker) checkUnrouted(x *Exchange) error {
	fail := func(why string) error {
		return fmt.Errorf("%s %s (no documented route) → %d %s: %s",
			x.Request.Method, x.Request.URL.RequestURI(), x.Status, x.Header.Get("Content-Type"), why)
	}
	if x.Status < 400 {
		return fail("want an error status")
	}
	if !isJSON(x.Header.Get("Content-Type")) {
		return fail("want a JSON error body")
	}
	var v any
	if err := json.Unmarshal(x.Body, &v); err != nil {
		return fail("body is not JSON: " + err.Error())
	}
	if ok, errs := c.schemas.ValidateSchemaObject(c.errorS, v); !ok {
		return fail("body is not an Error:\n" + describe(errs))
	}
	return nil
}

func isJSON(ct string) bool {
	mt := mediaType(ct)
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// mediaType is ct without parameters, in lower case.
func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.TrimSpace(strings.ToLower(mt))
}

// decodeNDJSON reads an NDJSON body as the array of its lines, which is
// how the document describes one. Blank lines (a stream's keepalives)
// are skipped. In a response a last line without its newline is a
// stream cut short and left out; in a request it is the last entry, as
// the server reads it (producers often leave the final newline off).
func decodeNDJSON(in *content.DecodeInput) (any, error) {
	body, err := io.ReadAll(in.Body)
	if err != nil {
		return nil, err
	}
	out := []any{}
	for n := 1; len(body) > 0; n++ {
		i := bytes.IndexByte(body, '\n')
		if i < 0 {
			if in.Direction != content.Request {
				break
			}
			i = len(body)
		}
		line := bytes.TrimSpace(body[:i])
		body = body[min(i+1, len(body)):]
		if len(line) == 0 {
			continue
		}
		var v any
		if err := json.Unmarshal(line, &v); err != nil {
			return nil, fmt.Errorf("line %d: %v", n, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// decodeSSE checks an event stream frame by frame: every event's data
// must be valid by the schema the media type's x-sse-data names, and its
// event field what x-sse-event says ("" for none). It returns the body
// as text, which is what the media type's own schema describes.
func (c *Checker) decodeSSE(in *content.DecodeInput) (any, error) {
	body, err := io.ReadAll(in.Body)
	if err != nil {
		return nil, err
	}
	dataRef, _ := extension(in.Schema, "x-sse-data")
	wantEvent, hasEvent := extension(in.Schema, "x-sse-event")
	var data *base.Schema
	if dataRef != "" {
		if data = c.schema(dataRef); data == nil {
			return nil, fmt.Errorf("x-sse-data %q names no component schema", dataRef)
		}
	}
	var problems []string
	n := 0
	err = readEvents(body, func(ev event) {
		n++
		if hasEvent && ev.event != wantEvent {
			problems = append(problems, fmt.Sprintf("event %d (id %s): event %q, want %q", n, ev.id, ev.event, wantEvent))
		}
		if data == nil {
			return
		}
		var v any
		if err := json.Unmarshal([]byte(ev.data), &v); err != nil {
			problems = append(problems, fmt.Sprintf("event %d (id %s): data is not JSON: %v", n, ev.id, err))
			return
		}
		if ok, errs := c.schemas.ValidateSchemaObject(data, v); !ok {
			problems = append(problems, fmt.Sprintf("event %d (id %s): data is not a %s:\n%s", n, ev.id, dataRef, describe(errs)))
		}
	})
	if err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return string(body), nil
}

func extension(s *base.Schema, name string) (string, bool) {
	if s == nil || s.Extensions == nil {
		return "", false
	}
	node := s.Extensions.GetOrZero(name)
	if node == nil {
		return "", false
	}
	return node.Value, true
}

type event struct{ id, event, data string }

// readEvents parses an event stream (the WHATWG rules, less what buildlog
// never sends), calling fn with each dispatched event. An event without
// its closing blank line is a stream cut short, and is not dispatched.
func readEvents(body []byte, fn func(event)) error {
	// A line without its newline is a stream cut short (or a kept
	// prefix ending mid-line): it is not read.
	body = body[:bytes.LastIndexByte(body, '\n')+1]
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 32<<20)
	var ev event
	var data []string
	has := false
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" {
			if has {
				ev.data = strings.Join(data, "\n")
				fn(ev)
			}
			ev, data, has = event{}, nil, false
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // a comment: the keepalive
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			ev.id, has = value, true
		case "event":
			ev.event, has = value, true
		case "data":
			data, has = append(data, value), true
		case "retry":
		default:
			return fmt.Errorf("unknown field %q in the event stream", field)
		}
	}
	return sc.Err()
}

// CheckDelivery holds a webhook delivery, as a receiver got it, to the
// document's webhooks: the operation of its Buildlog-Event type, the
// headers it names and the schema of its body.
func (c *Checker) CheckDelivery(header http.Header, body []byte) error {
	typ := header.Get("Buildlog-Event")
	if c.model.Webhooks == nil {
		return errors.New("delivery: the document has no webhooks")
	}
	item := c.model.Webhooks.GetOrZero(typ)
	if item == nil || item.Post == nil {
		return fmt.Errorf("delivery: Buildlog-Event %q is not one of the document's webhooks", typ)
	}
	op := item.Post
	var problems []string
	for _, p := range op.Parameters {
		if p.In == "header" && p.Required != nil && *p.Required && header.Get(p.Name) == "" {
			problems = append(problems, "no "+p.Name+" header")
		}
	}
	if op.RequestBody == nil || op.RequestBody.Content == nil {
		return fmt.Errorf("delivery %s: the document gives its body no schema", typ)
	}
	ct := header.Get("Content-Type")
	mt := op.RequestBody.Content.GetOrZero(mediaType(ct))
	if mt == nil || mt.Schema == nil {
		problems = append(problems, fmt.Sprintf("Content-Type %q is not the document's", ct))
	} else {
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			problems = append(problems, "body is not JSON: "+err.Error())
		} else if ok, errs := c.schemas.ValidateSchemaObject(mt.Schema.Schema(), v); !ok {
			problems = append(problems, "body:\n"+describe(errs))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("delivery %s, not as the document says: %s", typ, strings.Join(problems, "; "))
	}
	return nil
}
