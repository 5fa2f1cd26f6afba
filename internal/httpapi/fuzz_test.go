package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/apicheck"
	"buildlog/internal/httpapi"
	"buildlog/internal/testkit"
)

// fuzzAPI is one real API on a real SQLite file, called in process (no
// sockets: fuzzing wants thousands of requests a second), with a finished
// build, so no read waits, and a running one for appends.
type fuzzAPI struct {
	api      *httpapi.API
	store    buildlog.Store
	done     *buildlog.Build // finished, with entries
	running  string
	token    string // a stream token for done
	pageToks []string
}

const fuzzDone, fuzzRunning = "tb_fz", "tb_fz_run"

func newFuzzAPI(f *testing.F) *fuzzAPI {
	f.Helper()
	st := testkit.OpenSQLite(f, f.TempDir())
	secret, _ := st.Secret(context.Background())
	api := httpapi.New(httpapi.Config{Store: st, AdminKey: adminKey, Secret: secret, Keepalive: time.Hour,
		Limits: buildlog.Limits{MaxBatch: 50, MaxMessage: 256}, MaxBody: 4096})
	f.Cleanup(api.Drain)
	z := &fuzzAPI{api: api, store: st, running: fuzzRunning}
	must := func(code int, body []byte) []byte {
		if code/100 != 2 {
			f.Fatalf("setup: %d %s", code, body)
		}
		return body
	}
	must(z.call("POST", "/v1/templates/tmpl/builds", `{"build_id":"tb_fz","namespace":"ns","name":"n","version":"1.0.0"}`, adminKey, nil))
	must(z.call("POST", "/v1/templates/builds/tb_fz/logs", `[{"message":"a","level":"debug","phase":"boot"},{"message":"b","level":"warn","kind":"warning"},{"message":"c","source":"npm"}]`, adminKey, nil))
	must(z.call("POST", "/v1/templates/builds/tb_fz/finish", `{"status":"failed"}`, adminKey, nil))
	must(z.call("POST", "/v1/templates/tmpl/builds", `{"build_id":"tb_fz_run"}`, adminKey, nil))
	var tok struct{ Token string }
	json.Unmarshal(must(z.call("POST", "/v1/templates/builds/tb_fz/stream-token", "", adminKey, nil)), &tok)
	z.token = tok.Token
	for _, q := range []string{"startFromHead=true&limit=1", "startFromHead=true&limit=2", "limit=1"} {
		var page struct{ NextToken string }
		json.Unmarshal(must(z.call("GET", "/v1/builds/tb_fz/logs?"+q, "", adminKey, nil)), &page)
		z.pageToks = append(z.pageToks, page.NextToken)
	}
	z.done, _ = st.Build(context.Background(), fuzzDone)
	return z
}

// call serves one request. rawQuery is set as it would arrive on the wire,
// unparsed; headers are set without validation, as a hostile client's are.
func (z *fuzzAPI) call(method, path, body, key string, hdr map[string]string) (int, []byte) {
	p, rawQuery, _ := strings.Cut(path, "?")
	req := httptest.NewRequest(method, "/", strings.NewReader(body))
	req.URL.Path, req.URL.RawQuery = p, rawQuery
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for k, v := range hdr {
		req.Header[k] = []string{v}
	}
	w := httptest.NewRecorder()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	z.api.ServeHTTP(w, req.WithContext(ctx))
	b, _ := io.ReadAll(w.Result().Body)
	if ctx.Err() != nil {
		return -1, b
	}
	// What the API answers any input is held to the document as well,
	// and an accepted body must be one the document allows. A fuzz target
	// may not report through f, so a mismatch fails it as a panic, with
	// the input it found.
	if doc, err := testkit.Doc(); err == nil {
		x := &apicheck.Exchange{Request: req, RequestBody: []byte(body), Status: w.Code, Header: w.Result().Header, Body: b}
		if err := doc.Check(x); err != nil {
			panic(fmt.Sprintf("openapi: %v", err))
		}
	}
	return w.Code, b
}

// unchanged fails unless both builds are as the setup left them (the
// running one at next offset want).
func (z *fuzzAPI) unchanged(t *testing.T, wantRunning uint64) {
	t.Helper()
	b, err := z.store.Build(context.Background(), fuzzDone)
	if err != nil || b.NextOffset != z.done.NextOffset || b.Status != z.done.Status {
		t.Fatalf("finished build changed: %+v %v", b, err)
	}
	r, err := z.store.Build(context.Background(), fuzzRunning)
	if err != nil || r.NextOffset != wantRunning || r.Status.Terminal() {
		t.Fatalf("running build changed: next %d status %s, want next %d (%v)", r.NextOffset, r.Status, wantRunning, err)
	}
}

// wantClientAnswer fails on a 5xx, a hang, or an error body that is not
// the JSON error shape.
func wantClientAnswer(t *testing.T, what string, code int, body []byte, ok ...int) {
	t.Helper()
	for _, c := range ok {
		if code == c {
			return
		}
	}
	if code < 400 || code >= 500 {
		t.Fatalf("%s: status %d: %.300s", what, code, body)
	}
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("%s: %d with a body that is not a JSON error: %.300s", what, code, body)
	}
}

// FuzzAppendBody: any append body, JSON or NDJSON, with any
// Buildlog-First-Offset header, is stored whole (200) or refused with a 4xx
// that changes nothing.
func FuzzAppendBody(f *testing.F) {
	z := newFuzzAPI(f)
	f.Add(`[{"message":"x"}]`, false, "")
	f.Add(`{"entries":[{"message":"x"}],"first_offset":0}`, false, "")
	f.Add("{\"message\":\"x\"}\n{\"message\":\"y\"}\n", true, "0")
	f.Add(`[{"message":"x","level":"loud"}]`, false, "")
	f.Add(`{"entries":[],"entries":[{"message":"x"}]}`, false, "")
	f.Add(`[{"message":"x"}]`, false, "18446744073709551615")
	f.Add(`[{"message":"x"}]`, false, "-1")
	f.Add(`[{"message":"`+strings.Repeat("x", 300)+`"}]`, false, "")
	f.Fuzz(func(t *testing.T, body string, ndjson bool, first string) {
		before, err := z.store.Build(context.Background(), fuzzRunning)
		if err != nil {
			t.Fatal(err)
		}
		hdr := map[string]string{}
		if ndjson {
			hdr["Content-Type"] = "application/x-ndjson"
		}
		if first != "" {
			hdr["Buildlog-First-Offset"] = first
		}
		code, resp := z.call("POST", "/v1/templates/builds/"+fuzzRunning+"/logs", body, adminKey, hdr)
		if code == 200 {
			var r struct{ First, Next uint64 }
			json.Unmarshal(resp, &struct {
				First *uint64 `json:"first_offset"`
				Next  *uint64 `json:"next_offset"`
			}{&r.First, &r.Next})
			if r.Next <= r.First {
				t.Fatalf("200 storing nothing: %s", resp)
			}
			// Stored at the end, or an idempotent replay storing nothing.
			want := before.NextOffset
			if r.First == before.NextOffset {
				want = r.Next
			}
			z.unchanged(t, want)
			return
		}
		wantClientAnswer(t, "append", code, resp)
		z.unchanged(t, before.NextOffset)
	})
}

// FuzzQuery: any query string on every read route answers 200, 204 or a
// 4xx JSON error, and changes nothing.
func FuzzQuery(f *testing.F) {
	z := newFuzzAPI(f)
	for _, q := range []string{
		"", "offset=1", "cursor=2&follow=true", "offset=99", "tail=2", "tail=2&offset=1", "follow=maybe",
		"level=warn&kind=warning&phase=boot", "level=loud", "limit=0", "limit=10001", "limit=2",
		"startFromHead=true&limit=1", "nextToken=abc", "status=ready&template_id=tmpl", "cursor=%zz", "offset=%00",
		"offset=18446744073709551615", "offset=18446744073709551616", "offset=1&offset=2", "token=x", ";;&&==",
	} {
		f.Add(q, "")
		f.Add(q, "application/json")
	}
	f.Add("follow=true", "application/x-ndjson")
	f.Fuzz(func(t *testing.T, rawQuery, accept string) {
		before, _ := z.store.Build(context.Background(), fuzzRunning)
		hdr := map[string]string{}
		if accept != "" {
			hdr["Accept"] = accept
		}
		for _, p := range []string{
			"/v1/templates/builds/" + fuzzDone + "/logs",
			"/v1/templates/builds/" + fuzzDone,
			"/v1/templates/builds",
			"/v1/builds/" + fuzzDone + "/logs",
			"/v1/builds/" + fuzzDone,
			"/templates/ns/n/1.0.0/build/events",
		} {
			code, body := z.call("GET", p+"?"+rawQuery, "", adminKey, hdr)
			wantClientAnswer(t, p+"?"+rawQuery, code, body, 200, 204)
		}
		z.unchanged(t, before.NextOffset)
	})
}

// FuzzLastEventID: any Last-Event-ID header on the two SSE dialects.
func FuzzLastEventID(f *testing.F) {
	z := newFuzzAPI(f)
	for _, s := range []string{"0", "1", "3", "4", "99", "-1", "+1", "1.0", "0x1", " 1", "18446744073709551614", "18446744073709551615", "18446744073709551616", "１", "1\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		before, _ := z.store.Build(context.Background(), fuzzRunning)
		for _, p := range []string{"/v1/templates/builds/" + fuzzDone + "/logs?follow=true", "/templates/ns/n/1.0.0/build/events"} {
			code, body := z.call("GET", p, "", adminKey, map[string]string{"Last-Event-ID": id})
			wantClientAnswer(t, "Last-Event-ID "+id, code, body, 200, 204)
			if code == 200 && !strings.Contains(string(body), "id: ") && !strings.HasPrefix(string(body), "retry:") {
				t.Fatalf("200 without a stream: %.200s", body)
			}
		}
		z.unchanged(t, before.NextOffset)
	})
}

// FuzzPageToken: a dialect C nextToken the server did not issue for this
// build is a 400; only issued ones read.
func FuzzPageToken(f *testing.F) {
	z := newFuzzAPI(f)
	for _, tok := range z.pageToks {
		f.Add(tok)
		f.Add(tok[:len(tok)/2])
		f.Add(tok + "A")
	}
	f.Add("")
	f.Add("not-a-token")
	f.Fuzz(func(t *testing.T, tok string) {
		code, body := z.call("GET", "/v1/builds/"+fuzzDone+"/logs?nextToken="+url.QueryEscape(tok), "", adminKey, nil)
		issued := tok == ""
		for _, p := range z.pageToks {
			issued = issued || p == tok
		}
		if issued {
			if code != 200 {
				t.Fatalf("issued token refused: %d %s", code, body)
			}
			return
		}
		if code != 400 {
			t.Fatalf("token %q not issued by the server: %d %.200s", tok, code, body)
		}
		wantClientAnswer(t, "nextToken", code, body)
	})
}

// FuzzStreamToken: a ?token= other than the issued one is a 401, and no
// token is ever accepted as a Bearer key.
func FuzzStreamToken(f *testing.F) {
	z := newFuzzAPI(f)
	f.Add(z.token)
	f.Add(z.token[:len(z.token)-1])
	f.Add(strings.Replace(z.token, "st1.", "st2.", 1))
	f.Add("st1.")
	f.Add("st1..")
	f.Add("st1.dGJfZnp8ZGVmYXVsdHw5OTk5OTk5OTk5.AAAA")
	f.Fuzz(func(t *testing.T, tok string) {
		code, body := z.call("GET", "/v1/templates/builds/"+fuzzDone+"/logs?token="+url.QueryEscape(tok), "", "", nil)
		switch {
		case tok == z.token:
			if code != 200 {
				t.Fatalf("issued token refused: %d", code)
			}
		case code != http.StatusUnauthorized:
			t.Fatalf("token %q not issued by the server: %d %.200s", tok, code, body)
		}
		if strings.ContainsAny(tok, "\r\n") {
			return // not a header value any client could send
		}
		code, body = z.call("GET", "/v1/templates/builds/"+fuzzDone, "", tok, nil)
		if code != http.StatusUnauthorized && strings.TrimSpace(tok) != adminKey {
			t.Fatalf("token %q as a Bearer key: %d %.200s", tok, code, body)
		}
	})
}
