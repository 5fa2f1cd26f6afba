package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"buildlog/internal/testkit"
)

// The isolation matrix: on every route that reaches a build, team B's key
// on team A's build answers exactly what it answers once that build no
// longer exists: same status, same content type, same body. The build is
// the same id each time (deleted in between), so not even the message
// differs.
func TestIsolationMatrix(t *testing.T) {
	s := newServer(t)
	a, _ := s.newKey("team-a", "read", "write")
	b, _ := s.newKey("team-b", "read", "write")
	const id = "tb_iso"
	s.want(s.do("POST", "/v1/templates/tmpl_iso/builds", a,
		map[string]any{"build_id": id, "namespace": "iso", "name": "img", "version": "1.0.0"}), 201)
	s.want(s.do("POST", "/v1/templates/builds/"+id+"/logs", a, msgs(0, 5)), 200)
	var page struct{ NextToken string }
	json.Unmarshal(s.want(s.do("GET", "/v1/builds/"+id+"/logs?startFromHead=true&limit=2", a, nil), 200).body, &page)
	if page.NextToken == "" {
		t.Fatal("no nextToken from team A's own page")
	}

	type route struct {
		method, path, body string
		hdr                []string
	}
	logs := "/v1/templates/builds/" + id + "/logs"
	routes := []route{
		{"GET", "/v1/templates/builds/" + id, "", nil},
		{"GET", logs, "", nil},
		{"GET", logs + "?follow=true", "", nil},
		{"GET", logs + "?offset=2&follow=true", "", nil},
		{"GET", logs + "?tail=1", "", nil},
		{"GET", logs, "", []string{"Last-Event-ID", "999"}}, // past the end: 204 for the owner
		{"GET", logs, "", []string{"Accept", "application/json"}},
		{"GET", logs + "?limit=2&level=warn", "", []string{"Accept", "application/json"}},
		{"GET", logs + "?follow=true", "", []string{"Accept", "application/x-ndjson"}},
		{"POST", logs, `[{"message":"from team b"}]`, nil},
		{"POST", logs, `{"entries":[{"message":"x"}],"first_offset":5}`, nil},
		{"POST", logs, "{\"message\":\"nd\"}\n", []string{"Content-Type", "application/x-ndjson", "Buildlog-First-Offset", "5"}},
		{"POST", "/v1/templates/builds/" + id + "/finish", `{"status":"failed"}`, nil},
		{"POST", "/v1/templates/builds/" + id + "/stream-token", "", nil},
		{"GET", "/v1/builds/" + id, "", nil},
		{"GET", "/v1/builds/" + id + "/logs", "", nil},
		{"GET", "/v1/builds/" + id + "/logs?startFromHead=true&limit=10", "", nil},
		{"GET", "/v1/builds/" + id + "/logs?nextToken=" + page.NextToken, "", nil},
		{"GET", "/templates/iso/img/1.0.0/build/events", "", nil},
		{"GET", "/templates/iso/img/1.0.0/build/events", "", []string{"Last-Event-ID", "2"}},
		{"GET", "/v1/templates/builds?template_id=tmpl_iso", "", nil},
		{"GET", "/v1/templates/builds?status=building", "", nil},
	}
	answers := func(stage string) []string {
		out := make([]string, len(routes))
		for i, rt := range routes {
			var body any
			if rt.body != "" {
				body = rt.body
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			r := s.doCtx(ctx, rt.method, rt.path, b, body, rt.hdr...)
			cancel()
			out[i] = fmt.Sprintf("%d %s %s", r.code, r.header.Get("Content-Type"), r.body)
			if r.code != 404 && r.code != 200 {
				t.Errorf("%s: %s %s: %s", stage, rt.method, rt.path, out[i])
			}
		}
		return out
	}
	running := answers("running")
	s.want(s.do("POST", "/v1/templates/builds/"+id+"/finish", a, map[string]any{"status": "ready"}), 200)
	finished := answers("finished")
	if st := s.build(id); st["next_offset"] != 6.0 || st["status"] != "ready" {
		t.Fatalf("team B changed team A's build: %v", st)
	}
	if n, err := s.store.DeleteFinished(context.Background(), time.Now().Add(time.Hour), 0); err != nil || n != 1 {
		t.Fatalf("deleting the build: %d %v", n, err)
	}
	s.want(s.do("GET", "/v1/templates/builds/"+id, adminKey, nil), 404)
	missing := answers("missing")
	for i, rt := range routes {
		if running[i] != missing[i] || finished[i] != missing[i] {
			t.Errorf("%s %s %v:\n running build: %s\nfinished build: %s\n missing build: %s",
				rt.method, rt.path, rt.hdr, running[i], finished[i], missing[i])
		}
	}
}

// doCtx is do with a context, so a request that wrongly opens a stream
// ends instead of hanging the test.
func (s *server) doCtx(ctx context.Context, method, path, key string, body any, hdr ...string) resp {
	s.t.Helper()
	req, err := testkit.NewRequest(ctx, method, s.URL+path, key, body, hdr...)
	if err != nil {
		s.t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return resp{code: -1, header: http.Header{}, body: []byte(err.Error())}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		b = append(b, "\n(cut: "+err.Error()+")"...)
	}
	return resp{res.StatusCode, res.Header, b}
}
