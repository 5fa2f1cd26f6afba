package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"buildlog/internal/testkit"
)

// The client examples of the three provider docs buildlog's dialects come
// from (../shared/seeds), copied verbatim. Each test substitutes only the
// host, the build id and the key (and shortens the polling sleep), runs
// the real tool against the real binary, and checks what it prints.
// seedVerbatim checks each copy against the seed file when the seeds are
// there, so the copies cannot drift from what the providers document.
const (
	seedAFile   = "000_0add1a1c1d724146.txt"
	seedAPython = `import requests

url = "https://api.13-215-85-171.sslip.io/v1/templates/builds/{build_id}/logs"

headers = {"Authorization": "Bearer <token>"}

response = requests.get(url, headers=headers)

print(response.text)`

	seedBFile = "001_fe45850a5c4084a9.txt"
	seedBCurl = `curl -N https://www.orgo.ai/api/templates/default/claude-code/1.0.0/build/events \
  -H "Authorization: Bearer $ORGO_API_KEY"`

	seedCFile = "002_96c5af84d6c349a8.txt"
	seedCPoll = `BUILD_ID="123e4567-e89b-12d3-a456-426614174000"

while true; do
  RESPONSE=$(curl -s "https://api.pipecat.daily.co/v1/builds/$BUILD_ID/logs?limit=100" \
    -H "Authorization: Bearer $PIPECAT_API_KEY")

  echo "$RESPONSE" | jq -r '.logs[]'

  # Check if build is still in progress
  BUILD_STATUS=$(curl -s "https://api.pipecat.daily.co/v1/builds/$BUILD_ID" \
    -H "Authorization: Bearer $PIPECAT_API_KEY" | jq -r '.build.status')

  if [[ "$BUILD_STATUS" == "success" || "$BUILD_STATUS" == "failed" || "$BUILD_STATUS" == "timeout" ]]; then
    echo "Build finished with status: $BUILD_STATUS"
    break
  fi

  sleep 5
done`
	seedCDebug = `BUILD_ID="123e4567-e89b-12d3-a456-426614174000"

# Get the full build logs
curl -s "https://api.pipecat.daily.co/v1/builds/$BUILD_ID/logs?limit=10000" \
  -H "Authorization: Bearer $PIPECAT_API_KEY" | jq -r '.logs[]'`
)

// seedVerbatim fails if snippet is not, word for word, in the seed file;
// it is silent when the seeds are not beside this checkout.
func seedVerbatim(t *testing.T, file, snippet string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "seeds", file))
	if err != nil {
		return
	}
	if !bytes.Contains(b, []byte(snippet)) {
		t.Fatalf("this test's copy of the example is not verbatim in seeds/%s:\n%s", file, snippet)
	}
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
}

// seedServer starts the real binary and returns it with a read+write key
// of a team, made through the API as a user would.
func seedServer(t *testing.T) (*proc, string) {
	t.Helper()
	addr := testkit.FreeAddr(t)
	p := startServe(t, addr, []string{"BUILDLOG_ADMIN_KEY=adm"}, "--addr", addr, "--data", t.TempDir(), "--keepalive", "200ms")
	code, body := p.do("POST", "/v1/keys", "adm", `{"team":"acme","scopes":["read","write"],"name":"seed"}`)
	if code != 201 {
		t.Fatalf("create key: %d %s", code, body)
	}
	return p, mustJSON(t, body)["key"].(string)
}

// seedPost is a producer call that reports failure instead of ending the
// test from a goroutine.
func seedPost(p *proc, path, key, body string) error {
	req, _ := testkit.NewRequest(context.Background(), "POST", p.URL+path, key, body)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		return fmt.Errorf("POST %s: %d %s", path, res.StatusCode, b)
	}
	return nil
}

// seedProduce appends batches of lines "step i" with the given phases and
// sources, pausing between them, then finishes the build with status.
func seedProduce(p *proc, key, id string, batches, per int, pause time.Duration, status string) error {
	phases := []string{"boot", "install", "snapshot", "archive"}
	for b := range batches {
		var es []map[string]any
		for i := range per {
			n := b*per + i
			e := map[string]any{"message": "step " + strconv.Itoa(n), "phase": phases[b%len(phases)]}
			if n%3 == 0 {
				e["source"] = "npm"
			}
			if n%5 == 0 {
				e["level"] = "debug"
			}
			es = append(es, e)
		}
		j, _ := json.Marshal(es)
		if err := seedPost(p, "/v1/templates/builds/"+id+"/logs", key, string(j)); err != nil {
			return err
		}
		time.Sleep(pause)
	}
	return seedPost(p, "/v1/templates/builds/"+id+"/finish", key, `{"status":"`+status+`","message":"golden snapshot ready"}`)
}

// runScript runs a shell script with env added, failing after limit.
func runScript(t *testing.T, limit time.Duration, shell, script string, env ...string) (stdout string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, shell, "-c", script)
	cmd.Env = append(os.Environ(), append(env, "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s did not exit by itself within %v; printed:\n%s\nstderr:\n%s", shell, limit, out.String(), errb.String())
	}
	if err != nil {
		t.Fatalf("%s: %v; printed:\n%s\nstderr:\n%s", shell, err, out.String(), errb.String())
	}
	return out.String()
}

func subst(s string, pairs ...string) string {
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			panic("substitution target missing: " + pairs[i])
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	return s
}

// Seed B's curl -N, run while a producer writes and then finishes: curl
// prints every frame as it comes and exits by itself when the stream
// closes after the terminal frame.
func TestSeedBCurl(t *testing.T) {
	needTools(t, "bash", "curl")
	seedVerbatim(t, seedBFile, seedBCurl)
	p, key := seedServer(t)
	code, body := p.do("POST", "/v1/templates/tmpl_cc/builds", key, `{"namespace":"default","name":"claude-code","version":"1.0.0"}`)
	if code != 201 {
		t.Fatalf("create build: %d %s", code, body)
	}
	id := mustJSON(t, body)["build_id"].(string)

	script := subst(seedBCurl, "https://www.orgo.ai/api", p.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Env = append(os.Environ(), "ORGO_API_KEY="+key, "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
	out := &testkit.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The producer starts once curl is connected, so every frame but none
	// of the replay is live.
	for !strings.Contains(out.String(), "retry: ") {
		if ctx.Err() != nil {
			t.Fatalf("curl never connected: %q", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	const batches, per = 6, 4
	produced := make(chan error, 1)
	go func() { produced <- seedProduce(p, key, id, batches, per, 50*time.Millisecond, "ready") }()
	if err := cmd.Wait(); err != nil || ctx.Err() != nil {
		t.Fatalf("curl: %v (context %v); printed:\n%s", err, ctx.Err(), out.String())
	}
	if err := <-produced; err != nil {
		t.Fatal(err)
	}

	evs := events(t, []byte(out.String()))
	if len(evs) != batches*per+1 {
		t.Fatalf("curl printed %d frames, want %d:\n%s", len(evs), batches*per+1, out.String())
	}
	if strings.Contains(out.String(), "event:") {
		t.Fatalf("a frame has an event: line:\n%s", out.String())
	}
	for i, ev := range evs {
		var f map[string]string
		if err := json.Unmarshal(ev.Data, &f); err != nil || ev.ID != strconv.Itoa(i) {
			t.Fatalf("frame %d: id %q data %s", i, ev.ID, ev.Data)
		}
		if i < batches*per {
			if f["line"] != "step "+strconv.Itoa(i) || f["level"] != "info" || (i%3 == 0) != (f["source"] == "npm") {
				t.Fatalf("frame %d: %s", i, ev.Data)
			}
			continue
		}
		if f["level"] != "success" || f["phase"] != "ready" || f["line"] != "golden snapshot ready" {
			t.Fatalf("terminal frame: %s", ev.Data)
		}
	}
}

// Seed C's polling loop, with its sleep shortened, exits by itself
// printing the final status once the build succeeds; the seed's
// debugging example prints a failed build's whole log.
func TestSeedCPollingLoop(t *testing.T) {
	needTools(t, "bash", "curl", "jq")
	seedVerbatim(t, seedCFile, seedCPoll)
	seedVerbatim(t, seedCFile, seedCDebug)
	p, key := seedServer(t)
	code, body := p.do("POST", "/v1/templates/tmpl_pc/builds", key, `{}`)
	if code != 201 {
		t.Fatalf("create build: %d %s", code, body)
	}
	id := mustJSON(t, body)["build_id"].(string) // a UUID, as the seed's {buildId}

	script := subst(seedCPoll,
		"https://api.pipecat.daily.co", p.URL,
		"123e4567-e89b-12d3-a456-426614174000", id,
		"sleep 5", "sleep 0.2")
	produced := make(chan error, 1)
	go func() { produced <- seedProduce(p, key, id, 10, 3, 100*time.Millisecond, "ready") }()
	out := runScript(t, 120*time.Second, "bash", script, "PIPECAT_API_KEY="+key)
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if last := lines[len(lines)-1]; last != "Build finished with status: success" {
		t.Fatalf("last line %q; printed:\n%s", last, out)
	}
	seen := 0
	for _, l := range lines[:len(lines)-1] {
		if !strings.HasPrefix(l, "[npm] ") && !strings.HasPrefix(l, "[builder] ") {
			t.Fatalf("printed %q, not a log line", l)
		}
		seen++
	}
	if seen == 0 {
		t.Fatalf("the loop printed no log line:\n%s", out)
	}

	// Debugging a failed build: the whole log.
	code, body = p.do("POST", "/v1/templates/tmpl_pc/builds", key, `{}`)
	if code != 201 {
		t.Fatalf("create build: %d %s", code, body)
	}
	failed := mustJSON(t, body)["build_id"].(string)
	if err := seedProduce(p, key, failed, 2, 3, 0, "failed"); err != nil {
		t.Fatal(err)
	}
	out = runScript(t, 120*time.Second, "bash", subst(seedCDebug,
		"https://api.pipecat.daily.co", p.URL,
		"123e4567-e89b-12d3-a456-426614174000", failed), "PIPECAT_API_KEY="+key)
	lines = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 7 || !strings.HasSuffix(lines[0], " step 0") || !strings.HasPrefix(lines[0], "[npm] ") ||
		!strings.HasSuffix(lines[5], " step 5") || !strings.HasSuffix(lines[6], " golden snapshot ready") {
		t.Fatalf("full log of a failed build:\n%s", out)
	}
}

// A nextToken loop in bash (curl + jq), run while a producer writes: it
// prints every line exactly once, in order, and stops when the build ends.
func TestSeedCNextTokenLoop(t *testing.T) {
	needTools(t, "bash", "curl", "jq")
	p, key := seedServer(t)
	code, body := p.do("POST", "/v1/templates/tmpl_pc/builds", key, `{}`)
	if code != 201 {
		t.Fatalf("create build: %d %s", code, body)
	}
	id := mustJSON(t, body)["build_id"].(string)
	// The loop of docs/API.md: start from the head, follow nextToken
	// until it is absent.
	script := subst(`BUILD_ID="123e4567-e89b-12d3-a456-426614174000"
TOKEN=""
while true; do
  RESPONSE=$(curl -sf --get "https://api.pipecat.daily.co/v1/builds/$BUILD_ID/logs" \
    --data-urlencode "limit=7" --data-urlencode "startFromHead=true" \
    --data-urlencode "nextToken=$TOKEN" \
    -H "Authorization: Bearer $PIPECAT_API_KEY") || exit 1
  echo "$RESPONSE" | jq -r '.logs[]'
  TOKEN=$(echo "$RESPONSE" | jq -r '.nextToken // empty')
  [ -z "$TOKEN" ] && break
  sleep 0.05
done`, "https://api.pipecat.daily.co", p.URL, "123e4567-e89b-12d3-a456-426614174000", id)
	const batches, per = 12, 5
	produced := make(chan error, 1)
	go func() { produced <- seedProduce(p, key, id, batches, per, 20*time.Millisecond, "ready") }()
	out := runScript(t, 120*time.Second, "bash", script, "PIPECAT_API_KEY="+key)
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != batches*per+1 {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), batches*per+1, out)
	}
	for i, l := range lines[:batches*per] {
		if !strings.HasSuffix(l, " step "+strconv.Itoa(i)) {
			t.Fatalf("line %d is %q", i, l)
		}
	}
	if !strings.HasSuffix(lines[batches*per], " golden snapshot ready") {
		t.Fatalf("last line %q", lines[batches*per])
	}
}

// Seed A's python example prints the whole SSE text of a finished build.
func TestSeedAPython(t *testing.T) {
	needTools(t, "python3")
	if err := exec.Command("python3", "-c", "import requests").Run(); err != nil {
		t.Skip("python3 has no requests module")
	}
	seedVerbatim(t, seedAFile, seedAPython)
	p, key := seedServer(t)
	code, body := p.do("POST", "/v1/templates/tmpl_123/builds", key, `{"build_id":"tb_123"}`)
	if code != 201 {
		t.Fatalf("create build: %d %s", code, body)
	}
	if err := seedProduce(p, key, "tb_123", 3, 4, 0, "ready"); err != nil {
		t.Fatal(err)
	}
	script := subst(seedAPython,
		"https://api.13-215-85-171.sslip.io", p.URL,
		"{build_id}", "tb_123",
		"<token>", key)
	out := runScript(t, 120*time.Second, "python3", script)

	// The frames, exactly: id, event, and the stored entry, which the JSON
	// form returns byte for byte.
	code, body = p.do("GET", "/v1/templates/builds/tb_123/logs", key, "", "Accept", "application/json")
	if code != 200 {
		t.Fatalf("JSON page: %d %s", code, body)
	}
	var page struct {
		Entries []json.RawMessage `json:"entries"`
	}
	if err := json.Unmarshal(body, &page); err != nil || len(page.Entries) != 13 {
		t.Fatalf("JSON page: %v %s", err, body)
	}
	var want strings.Builder
	for i, e := range page.Entries {
		fmt.Fprintf(&want, "id: %d\nevent: log\ndata: %s\n\n", i, e)
	}
	want.WriteString("\n") // print's newline
	retry, frames, ok := strings.Cut(out, "\n\n")
	if !ok || !strings.HasPrefix(retry, "retry: ") {
		t.Fatalf("python printed no retry line first:\n%s", out)
	}
	if frames != want.String() {
		t.Fatalf("python printed\n%s\nwant\n%s", frames, want.String())
	}
}
