package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"buildlog/internal/sse"
	"buildlog/internal/testkit"
)

// events parses an SSE body into its events.
func events(t *testing.T, body []byte) []sse.Event {
	t.Helper()
	return testkit.ReadEvents(t, sse.NewReader(bytes.NewReader(body)))
}

func copyStore(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binPath, append([]string{"copy-store"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// TestCopyStoreToPostgres moves a real server's embedded store to
// PostgreSQL with `buildlog copy-store` and checks that a server on the
// database carries on where the old one stopped: same builds, the same log
// events, the same key, a page token of the old server still accepted, and
// a running build that goes on at its next offset.
func TestCopyStoreToPostgres(t *testing.T) {
	dsn := freshDatabase(t)
	data := t.TempDir()
	addr := testkit.FreeAddr(t)
	old := startServe(t, addr, []string{"BUILDLOG_ADMIN_KEY=k"}, "--addr", addr, "--data", data)
	code, body := old.do("POST", "/v1/keys", "k", `{"team":"acme","scopes":["read","write"],"name":"ci"}`)
	if code != 201 {
		t.Fatalf("create key: %d %s", code, body)
	}
	key := mustJSON(t, body)["key"].(string)
	for _, req := range [][2]string{
		{"/v1/templates/tmpl_1/builds", `{"build_id":"tb_done","namespace":"acme","name":"img","version":"1.0.0","metadata":{"b":1,"a":2}}`},
		{"/v1/templates/builds/tb_done/logs", `[{"message":"one","phase":"install"},{"message":"two","level":"warn"}]`},
		{"/v1/templates/builds/tb_done/logs", `{"first_offset":2,"entries":[{"message":"three","source":"apt"}]}`},
		{"/v1/templates/builds/tb_done/finish", `{"status":"ready","result":{"image":"x"}}`},
		{"/v1/templates/tmpl_1/builds", `{"build_id":"tb_running"}`},
		{"/v1/templates/builds/tb_running/logs", `{"first_offset":0,"entries":[{"message":"started"}]}`},
	} {
		if code, body := old.do("POST", req[0], key, req[1]); code != 200 && code != 201 {
			t.Fatalf("POST %s: %d %s", req[0], code, body)
		}
	}
	read := func(p *proc) (build map[string]any, log []sse.Event, page map[string]any) {
		_, b := p.do("GET", "/v1/templates/builds/tb_done", key, "")
		build = mustJSON(t, b)
		code, b := p.do("GET", "/v1/templates/builds/tb_done/logs", key, "")
		if code != 200 {
			t.Fatalf("replay: %d %s", code, b)
		}
		log = events(t, b)
		_, b = p.do("GET", "/v1/builds/tb_done/logs?startFromHead=true&limit=2", key, "")
		return build, log, mustJSON(t, b)
	}
	wantBuild, wantLog, firstPage := read(old)
	token, _ := firstPage["nextToken"].(string)
	if len(wantLog) != 4 || token == "" {
		t.Fatalf("before the copy: %d events, page %v", len(wantLog), firstPage)
	}
	old.cmd.Process.Signal(syscall.SIGTERM)
	<-old.done

	if out, code := copyStore(t, "--data", t.TempDir(), "--store", dsn); code != 2 || !strings.Contains(out, "no embedded store") {
		t.Errorf("copy-store from an empty directory: exit %d\n%s", code, out)
	}
	out, code := copyStore(t, "--data", data, "--store", dsn)
	if code != 0 || !strings.Contains(out, "copied 2 builds (5 entries) and 1 keys") {
		t.Fatalf("copy-store: exit %d\n%s", code, out)
	}

	addr = testkit.FreeAddr(t)
	pg := startServe(t, addr, []string{"BUILDLOG_ADMIN_KEY=k"}, "--addr", addr, "--store", dsn)
	gotBuild, gotLog, _ := read(pg)
	if !reflect.DeepEqual(gotBuild, wantBuild) {
		t.Errorf("build after the copy:\n got %v\nwant %v", gotBuild, wantBuild)
	}
	if !reflect.DeepEqual(gotLog, wantLog) {
		t.Errorf("log after the copy:\n got %+v\nwant %+v", gotLog, wantLog)
	}
	code, body = pg.do("GET", "/v1/builds/tb_done/logs?nextToken="+token, key, "")
	var page struct{ Logs []string }
	if json.Unmarshal(body, &page); code != 200 || len(page.Logs) != 2 || !strings.HasSuffix(page.Logs[0], " three") {
		t.Errorf("the old server's page token on the new one: %d %s", code, body)
	}
	if code, body := pg.do("POST", "/v1/templates/builds/tb_running/logs", key, `{"first_offset":1,"entries":[{"message":"moved"}]}`); code != 200 {
		t.Errorf("append to the running build after the copy: %d %s", code, body)
	}

	pg.cmd.Process.Signal(syscall.SIGTERM)
	<-pg.done
	if out, code := copyStore(t, "--data", data, "--store", dsn); code != 1 || !strings.Contains(out, "already holds") {
		t.Errorf("copy-store into a used database: exit %d\n%s", code, out)
	}
}
