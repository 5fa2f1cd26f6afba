package httpapi_test

import (
	"encoding/json"
	"net/url"
	"sync"
	"testing"
	"time"

	"buildlog/internal/httpapi"
)

// Stream tokens: the default lifetime is 5 minutes; a token reads its own
// build on every read route of it, and nothing else anywhere: not another
// build, not a write, not as a Bearer key, not to mint more tokens.
func TestStreamTokenBounds(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 3, 17, 0, 0, 0, 0, time.UTC)
	s := newServer(t, func(c *httpapi.Config) {
		c.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	id := s.newBuild(map[string]any{"build_id": "tb_tok", "namespace": "ns", "name": "img", "version": "1.0.0"})
	other := s.newBuild(map[string]any{"build_id": "tb_other", "namespace": "ns", "name": "other", "version": "1.0.0"})
	s.append(id, msgs(0, 2))
	s.append(other, msgs(0, 2))
	s.want(s.finish(id, "ready"), 200)
	s.want(s.finish(other, "ready"), 200)

	r := s.want(s.do("POST", "/v1/templates/builds/"+id+"/stream-token", adminKey, nil), 201)
	var tr struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(r.body, &tr); err != nil || tr.Token == "" {
		t.Fatalf("stream-token reply %s", r)
	}
	if d := tr.ExpiresAt.Sub(now); d != 5*time.Minute {
		t.Fatalf("token lives %v by default, want 5m", d)
	}
	q := "token=" + url.QueryEscape(tr.Token)

	// Its build's read routes, in every dialect.
	for _, path := range []string{
		"/v1/templates/builds/" + id + "?" + q,
		"/v1/templates/builds/" + id + "/logs?" + q,
		"/v1/templates/builds/" + id + "/logs?follow=true&" + q,
		"/v1/builds/" + id + "/logs?" + q,
		"/v1/builds/" + id + "?" + q,
		"/templates/ns/img/1.0.0/build/events?" + q,
	} {
		s.want(s.do("GET", path, "", nil), 200)
	}
	// Nothing else.
	for _, rt := range []struct{ method, path string }{
		{"GET", "/v1/templates/builds/" + other + "?" + q},
		{"GET", "/v1/templates/builds/" + other + "/logs?" + q},
		{"GET", "/v1/builds/" + other + "/logs?" + q},
		{"GET", "/v1/builds/" + other + "?" + q},
		{"GET", "/templates/ns/other/1.0.0/build/events?" + q},
		{"GET", "/v1/templates/builds?" + q},
		{"POST", "/v1/templates/builds/" + id + "/logs?" + q},
		{"POST", "/v1/templates/builds/" + id + "/finish?" + q},
		{"POST", "/v1/templates/builds/" + id + "/stream-token?" + q},
		{"POST", "/v1/templates/tmpl/builds?" + q},
		{"GET", "/v1/keys?" + q},
		{"POST", "/v1/keys?" + q},
		{"GET", "/v1/nowhere?" + q},
	} {
		var body any
		if rt.method == "POST" {
			body = `{"status":"ready"}`
		}
		s.want(s.do(rt.method, rt.path, "", body), 401)
	}
	// Never an API key: as a Bearer credential it is unknown everywhere,
	// its own build included.
	for _, path := range []string{"/v1/templates/builds/" + id, "/v1/templates/builds/" + id + "/logs", "/v1/builds/" + id, "/v1/templates/builds"} {
		s.want(s.do("GET", path, tr.Token, nil), 401)
	}
	// A key beside the token wins; a wrong key is not rescued by the token.
	s.want(s.do("GET", "/v1/templates/builds/"+id+"?"+q, "bl_wrong", nil), 401)

	// Expiry: valid up to its expires_at, refused from then on.
	mu.Lock()
	now = tr.ExpiresAt.Add(-time.Second)
	mu.Unlock()
	s.want(s.do("GET", "/v1/templates/builds/"+id+"?"+q, "", nil), 200)
	mu.Lock()
	now = tr.ExpiresAt
	mu.Unlock()
	for _, path := range []string{"/v1/templates/builds/" + id + "?" + q, "/v1/templates/builds/" + id + "/logs?" + q, "/v1/builds/" + id + "/logs?" + q} {
		s.want(s.do("GET", path, "", nil), 401)
	}
}

// The lifetime follows the flag.
func TestStreamTokenTTL(t *testing.T) {
	now := time.Date(2026, 3, 17, 0, 0, 0, 0, time.UTC)
	s := newServer(t, func(c *httpapi.Config) {
		c.Now = func() time.Time { return now }
		c.StreamTokenTTL = 90 * time.Second
	})
	id := s.newBuild(nil)
	var tr struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	json.Unmarshal(s.want(s.do("POST", "/v1/templates/builds/"+id+"/stream-token", adminKey, nil), 201).body, &tr)
	if d := tr.ExpiresAt.Sub(now); d != 90*time.Second {
		t.Fatalf("token lives %v, want 90s", d)
	}
}
