package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"buildlog/internal/apicheck"
	"buildlog/internal/testkit"
)

// binPath is the real binary, built once for the tests that run it.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "buildlog-bin-")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "buildlog")
	out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building buildlog: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running `buildlog serve`.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	URL    string
	out    *testkit.SyncBuffer // stdout and stderr
	done   chan struct{}
	waited error
}

// startServe runs the binary with args and env (added to a minimal
// environment) and waits until /healthz answers.
func startServe(t *testing.T, addr string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binPath, append([]string{"serve"}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	p := &proc{t: t, cmd: cmd, URL: "http://" + addr, out: &testkit.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.waited = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("server exited early: %v\n%s", p.waited, p.out)
		default:
		}
		// Only once this process says it listens: until then a /healthz
		// answer could come from whatever took the port after FreeAddr
		// freed it (another package's test server), and this process
		// would exit on "address already in use" a moment later.
		if strings.Contains(p.out.String(), "listening") {
			if r, err := http.Get(p.URL + "/healthz"); err == nil {
				r.Body.Close()
				if r.StatusCode == 200 {
					return p
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not healthy in time:\n%s", p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *proc) do(method, path, key, body string, hdr ...string) (int, []byte) {
	p.t.Helper()
	var send any // "" is no body
	if body != "" {
		send = body
	}
	res, b, err := testkit.Call(p.t, method, p.URL+path, key, send, hdr...)
	checkExchange(p.t, res.Request, body, res, b, err != nil)
	return res.StatusCode, b
}

// follow opens build's log with follow=true, as key, with hdr (header
// name, value pairs) set; a request that fails fails the test.
func (p *proc) follow(build, key string, hdr ...string) *http.Response {
	p.t.Helper()
	req, _ := http.NewRequest("GET", p.URL+"/v1/templates/builds/"+build+"/logs?follow=true", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	return res
}

// checkExchange holds what the binary answered to the API's document
// (GET /openapi.json), as internal/httpapi's tests do in process: a
// response, or an accepted request, that the document does not describe
// fails the test. The console's pages are not the API's.
func checkExchange(t *testing.T, req *http.Request, body string, res *http.Response, b []byte, partial bool) {
	t.Helper()
	if strings.HasPrefix(req.URL.Path, "/console/") {
		return
	}
	x := &apicheck.Exchange{Request: req, RequestBody: []byte(body), Status: res.StatusCode,
		Header: res.Header, Body: b, Partial: partial}
	if err := testkit.MustDoc(t).Check(x); err != nil {
		t.Errorf("openapi: %v", err)
	}
}

func mustJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not JSON: %s", b)
	}
	return m
}

func TestBootstrapKeyPrintedOnce(t *testing.T) {
	data := t.TempDir()
	addr := testkit.FreeAddr(t)
	p := startServe(t, addr, nil, "--addr", addr, "--data", data)
	out := p.out.String()
	var key string
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "bl_") {
			key = f
		}
	}
	if key == "" {
		t.Fatalf("first start printed no key:\n%s", out)
	}
	if code, body := p.do("POST", "/v1/keys", key, `{"team":"acme","scopes":["read"]}`); code != 201 {
		t.Fatalf("bootstrap key is not admin: %d %s", code, body)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	p2 := startServe(t, addr, nil, "--addr", addr, "--data", data)
	if strings.Contains(p2.out.String(), "bl_") {
		t.Fatalf("second start printed a key again:\n%s", p2.out)
	}
	if strings.Contains(p2.out.String()+out[strings.Index(out, key)+len(key):], key) {
		t.Fatal("the key appears in the server log")
	}
}

func TestEnvAndFlags(t *testing.T) {
	envAddr, flagAddr := testkit.FreeAddr(t), testkit.FreeAddr(t)
	data := t.TempDir()
	// The flag wins over the variable.
	p := startServe(t, flagAddr, []string{"BUILDLOG_ADDR=" + envAddr, "BUILDLOG_DATA=" + data, "BUILDLOG_ADMIN_KEY=k"}, "--addr", flagAddr)
	if _, err := http.Get("http://" + envAddr + "/healthz"); err == nil {
		t.Fatal("listening on the env address although --addr was given")
	}
	if _, err := os.Stat(filepath.Join(data, "buildlog.db")); err != nil {
		t.Fatalf("BUILDLOG_DATA ignored: %v", err)
	}
	p.kill()
	// A variable alone configures the flag: a short idle timeout ends a silent build.
	addr := testkit.FreeAddr(t)
	p = startServe(t, addr, []string{"BUILDLOG_ADDR=" + addr, "BUILDLOG_IDLE_TIMEOUT=300ms", "BUILDLOG_ADMIN_KEY=k"}, "--data", t.TempDir())
	if code, body := p.do("POST", "/v1/templates/t/builds", "k", `{"build_id":"tb_idle"}`); code != 201 {
		t.Fatalf("%d %s", code, body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := p.do("GET", "/v1/templates/builds/tb_idle", "k", "")
		if mustJSON(t, body)["status"] == "timeout" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("build not timed out: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A bad value is a usage error naming the variable.
	cmd := exec.Command(binPath, "serve", "--data", t.TempDir())
	cmd.Env = []string{"BUILDLOG_IDLE_TIMEOUT=soon"}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "BUILDLOG_IDLE_TIMEOUT") {
		t.Fatalf("bad env value: %v\n%s", err, out)
	}
}

// SIGTERM ends open streams cleanly and the process exits promptly.
func TestSIGTERMDrains(t *testing.T) {
	addr := testkit.FreeAddr(t)
	p := startServe(t, addr, []string{"BUILDLOG_ADMIN_KEY=k"}, "--addr", addr, "--data", t.TempDir())
	p.do("POST", "/v1/templates/t/builds", "k", `{"build_id":"tb_1"}`)
	p.do("POST", "/v1/templates/builds/tb_1/logs", "k", `[{"message":"a"}]`)
	res := p.follow("tb_1", "k")
	defer res.Body.Close()
	got := make(chan string, 1)
	go func() { b, _ := io.ReadAll(res.Body); got <- string(b) }()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case body := <-got:
		if !strings.Contains(body, "id: 0\n") {
			t.Fatalf("stream body %q", body)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("stream still open after SIGTERM")
	}
	<-p.done
	if p.waited != nil || time.Since(start) > 15*time.Second {
		t.Fatalf("exit %v after %v", p.waited, time.Since(start))
	}
}
