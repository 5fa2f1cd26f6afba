package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"buildlog/internal/httpapi"
)

func (s *server) newKey(team string, scopes ...string) (key, id string) {
	s.t.Helper()
	r := s.want(s.do("POST", "/v1/keys", adminKey, map[string]any{"team": team, "scopes": scopes, "name": "t"}), 201).json(s.t)
	return r["key"].(string), r["id"].(string)
}

func TestAuth(t *testing.T) {
	s := newServer(t)
	r := s.want(s.do("GET", "/v1/templates/builds/x", "", nil), 401)
	if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("401 without WWW-Authenticate: Bearer: %v", r.header)
	}
	r.errMessage(t)
	s.want(s.do("GET", "/v1/templates/builds/x", "bl_nope", nil), 401)
	s.want(s.do("GET", "/v1/templates/builds/x", "", nil, "Authorization", "Basic Zm9vOmJhcg=="), 401)
	s.want(s.do("GET", "/healthz", "", nil), 200)
	s.want(s.do("GET", "/readyz", "", nil), 200)

	reader, _ := s.newKey("acme", "read")
	writer, _ := s.newKey("acme", "write")
	s.want(s.do("POST", "/v1/templates/tmpl_1/builds", reader, nil), 403)
	b := s.want(s.do("POST", "/v1/templates/tmpl_1/builds", writer, map[string]any{"build_id": "tb_acme"}), 201).json(t)
	if b["team"] != "acme" {
		t.Fatalf("build of an acme key belongs to %v", b["team"])
	}
	s.want(s.do("GET", "/v1/templates/builds/tb_acme", writer, nil), 403)
	s.want(s.do("GET", "/v1/templates/builds/tb_acme", reader, nil), 200)
	s.want(s.do("GET", "/v1/keys", reader, nil), 403)
	s.want(s.do("POST", "/v1/keys", writer, map[string]any{"team": "acme", "scopes": []string{"admin"}}), 403)

	// Only an admin may name a team; from another key it is 403 and nothing is made.
	s.want(s.do("POST", "/v1/templates/tmpl_1/builds", writer, map[string]any{"build_id": "tb_t", "team": "other"}), 403)
	s.want(s.do("GET", "/v1/templates/builds/tb_t", adminKey, nil), 404)
	b = s.want(s.do("POST", "/v1/templates/tmpl_1/builds", adminKey, map[string]any{"build_id": "tb_t", "team": "other"}), 201).json(t)
	if b["team"] != "other" {
		t.Fatalf("admin build for team other belongs to %v", b["team"])
	}

	// A key with scope admin has the rights of the admin key.
	adm, _ := s.newKey("ops", "admin")
	s.want(s.do("GET", "/v1/templates/builds/tb_acme", adm, nil), 200)
	s.want(s.do("GET", "/v1/keys", adm, nil), 200)
}

func TestKeysAPI(t *testing.T) {
	s := newServer(t)
	key, id := s.newKey("acme", "read", "write")
	r := s.want(s.do("GET", "/v1/keys", adminKey, nil), 200)
	if strings.Contains(string(r.body), key) || !strings.Contains(string(r.body), id) {
		t.Fatalf("key list shows the secret or misses the key: %s", r)
	}
	var list struct {
		Keys []map[string]any `json:"keys"`
	}
	json.Unmarshal(r.body, &list)
	if len(list.Keys) != 1 || list.Keys[0]["team"] != "acme" || list.Keys[0]["created_at"] == nil {
		t.Fatalf("keys %s", r.body)
	}
	s.want(s.do("GET", "/v1/templates/builds", key, nil), 200)
	s.want(s.do("DELETE", "/v1/keys/"+id, adminKey, nil), 204)
	s.want(s.do("GET", "/v1/templates/builds", key, nil), 401)
	s.want(s.do("DELETE", "/v1/keys/"+id, adminKey, nil), 404)
	for _, body := range []string{`{"scopes":["read"]}`, `{"team":"a","scopes":[]}`, `{"team":"a","scopes":["root"]}`, `{"team":"a","scopes":["read"],"x":1}`} {
		s.want(s.do("POST", "/v1/keys", adminKey, body), 400)
	}
}

// Another team's build answers exactly as a build that does not exist.
func TestTeamIsolation(t *testing.T) {
	s := newServer(t)
	a, _ := s.newKey("team-a", "read", "write")
	bkey, _ := s.newKey("team-b", "read", "write")
	s.want(s.do("POST", "/v1/templates/tmpl_1/builds", a, map[string]any{"build_id": "tb_a"}), 201)
	s.want(s.do("POST", "/v1/templates/builds/tb_a/logs", a, msgs(0, 2)), 200)
	routes := []struct{ method, path, body string }{
		{"GET", "/v1/templates/builds/%s", ""},
		{"GET", "/v1/templates/builds/%s/logs", ""},
		{"GET", "/v1/templates/builds/%s/logs?follow=true", ""},
		{"POST", "/v1/templates/builds/%s/logs", `[{"message":"x"}]`},
		{"POST", "/v1/templates/builds/%s/finish", `{"status":"ready"}`},
		{"POST", "/v1/templates/builds/%s/stream-token", ""},
	}
	for _, rt := range routes {
		var body any
		if rt.body != "" {
			body = rt.body
		}
		theirs := s.do(rt.method, strings.Replace(rt.path, "%s", "tb_a", 1), bkey, body)
		missing := s.do(rt.method, strings.Replace(rt.path, "%s", "tb_none", 1), bkey, body)
		wantSame := strings.ReplaceAll(string(missing.body), "tb_none", "tb_a")
		if theirs.code != 404 || missing.code != 404 || string(theirs.body) != wantSame {
			t.Errorf("%s %s: other team's build %s, missing build %s", rt.method, rt.path, theirs, missing)
		}
	}
	r := s.want(s.do("GET", "/v1/templates/builds", bkey, nil), 200)
	if strings.Contains(string(r.body), "tb_a") {
		t.Fatalf("team b lists team a's build: %s", r)
	}
	if b := s.build("tb_a"); b["next_offset"] != 2.0 || b["status"] != "building" {
		t.Fatalf("team b changed team a's build: %v", b)
	}
}

func TestStreamTokens(t *testing.T) {
	now := time.Now()
	s := newServer(t, func(c *httpapi.Config) {
		c.Now = func() time.Time { return now }
		c.StreamTokenTTL = time.Minute
	})
	id := s.newBuild(nil)
	other := s.newBuild(nil)
	s.append(id, msgs(0, 2))
	s.want(s.finish(id, "ready"), 200)
	r := s.want(s.do("POST", "/v1/templates/builds/"+id+"/stream-token", adminKey, nil), 201).json(t)
	tok := r["token"].(string)
	if r["expires_at"] == nil {
		t.Fatal("no expires_at")
	}
	if st := s.open("/v1/templates/builds/"+id+"/logs?token="+tok, ""); st.code != 200 || len(st.all(t, 5e9)) != 3 {
		t.Fatalf("token refused on its build's log: %d", st.code)
	}
	s.want(s.do("GET", "/v1/templates/builds/"+id+"?token="+tok, "", nil), 200)
	s.want(s.do("GET", "/v1/templates/builds/"+other+"/logs?token="+tok, "", nil), 401)
	s.want(s.do("GET", "/v1/templates/builds?token="+tok, "", nil), 401)
	s.want(s.do("POST", "/v1/templates/builds/"+id+"/logs?token="+tok, "", msgs(0, 1)), 401)
	s.want(s.do("GET", "/v1/keys?token="+tok, "", nil), 401)
	s.want(s.do("GET", "/v1/templates/builds/"+id, tok, nil), 401) // never an API key
	s.want(s.do("GET", "/v1/templates/builds/"+id+"?token="+tok[:len(tok)-2]+"xx", "", nil), 401)
	now = now.Add(2 * time.Minute)
	s.want(s.do("GET", "/v1/templates/builds/"+id+"?token="+tok, "", nil), 401)
}

// Error bodies read as written: JSON's HTML escaping would turn the
// "<key>" of this message into \u003ckey\u003e for every curl user.
func TestErrorBodyNotHTMLEscaped(t *testing.T) {
	s := newServer(t)
	r := s.want(s.do("GET", "/v1/templates/builds/x", "", nil), 401)
	if want := `"message":"missing Authorization: Bearer <key>"`; !strings.Contains(string(r.body), want) {
		t.Fatalf("body %s, want it to contain %s", r.body, want)
	}
}
