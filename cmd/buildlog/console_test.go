package main

// Browser tests of the web console (/console/): the real binary, a real
// headless Chromium driven over CDP, real EventSource streams.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/testkit"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

const consoleAdmin = "console-admin-secret"

// chromiumPath finds the browser. Without one the console tests skip,
// unless BUILDLOG_REQUIRE_BROWSER is set (CI sets it): there a missing
// browser fails them, so a green run always covers the console.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	const msg = "chromium is not installed (apt-get install -y chromium)"
	if os.Getenv("BUILDLOG_REQUIRE_BROWSER") != "" {
		t.Fatal(msg + "; BUILDLOG_REQUIRE_BROWSER is set, so the console tests may not skip")
	}
	t.Skip(msg)
	return ""
}

// page is one headless Chromium tab.
type page struct {
	t   *testing.T
	ctx context.Context

	mu         sync.Mutex
	console    []string
	exceptions []string
}

func newPage(t *testing.T) *page {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	p := &page{t: t, ctx: ctx}
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.exceptions) > 0 {
			t.Errorf("uncaught exceptions in the page:\n%s", strings.Join(p.exceptions, "\n"))
		}
		if t.Failed() {
			t.Logf("browser console:\n%s", strings.Join(p.console, "\n"))
		}
	})
	// The first Run starts the browser; it must not carry a timeout.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			p.mu.Lock()
			p.console = append(p.console, m.String())
			if m.IsException() {
				p.exceptions = append(p.exceptions, m.String())
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *page) do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatal(err)
	}
}

func evalJS[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitJS waits until expr is true; debug is evaluated for the failure
// message. A navigation under way (after a click on a link) destroys the
// page's script context, so a poll that loses its context starts again;
// and the new page's script may run before its parser has made the
// elements expr reads, so an expr that throws is not true yet (it failed
// CI once: the new URL already, no b-status element yet).
func (p *page) waitJS(what, expr, debug string, timeout time.Duration) {
	p.t.Helper()
	began := time.Now()
	deadline := began.Add(timeout)
	for {
		left := time.Until(deadline)
		ctx, cancel := context.WithTimeout(p.ctx, left+5*time.Second)
		_, err := chromedp.Run(ctx, chromedp.Poll[bool]("(() => { try { return !!("+expr+") } catch { return false } })()",
			chromedp.WithPollingTimeout(left), chromedp.WithPollingInterval(50*time.Millisecond)))
		cancel()
		if err == nil {
			if testing.Verbose() {
				p.t.Logf("%s: after %v", what, time.Since(began).Round(time.Millisecond))
			}
			return
		}
		if left > 0 && (strings.Contains(err.Error(), "context with specified id") || strings.Contains(err.Error(), "context was destroyed") ||
			strings.Contains(err.Error(), "Inspected target navigated or closed")) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		got := ""
		if debug != "" {
			got = evalJS[string](p, "(() => { try { return JSON.stringify("+debug+") } catch (e) { return 'throws ' + e } })()")
		}
		p.t.Fatalf("waiting for %s: %v\ngot: %s", what, err, got)
	}
}

// enterKey answers the key form.
func (p *page) enterKey(key string) {
	p.t.Helper()
	p.do(
		chromedp.WaitVisible(chromedp.CSS("#key-form input")),
		chromedp.SendKeys(chromedp.CSS("#key-form input"), key+"\r"),
	)
}

func (p *page) screenshot(name string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatal(err)
	}
	// CI names a directory that outlives the test run (BUILDLOG_ARTIFACTS)
	// and lists it afterwards; otherwise go test -artifacts keeps them.
	dir := os.Getenv("BUILDLOG_ARTIFACTS")
	if dir == "" {
		dir = p.t.ArtifactDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot: %s", path)
	return path
}

// lineRows is, for the rows in the DOM, "offset|message" of each entry's
// first display line, top to bottom.
const lineRows = `[...document.querySelectorAll('#rows .row')].filter(r => r.querySelector('a.ln')).map(r => r.dataset.offset + '|' + r.querySelector('.msg').textContent)`

type ent map[string]any

func appendEntries(t *testing.T, p *proc, build string, es ...ent) {
	t.Helper()
	b, _ := json.Marshal(es)
	code, body := p.do("POST", "/v1/templates/builds/"+build+"/logs", consoleAdmin, string(b))
	if code != 200 {
		t.Fatalf("append: %d %s", code, body)
	}
}

func readerKey(t *testing.T, p *proc) string {
	t.Helper()
	code, body := p.do("POST", "/v1/keys", consoleAdmin, `{"team":"default","scopes":["read"],"name":"console"}`)
	if code != 201 {
		t.Fatalf("creating a read key: %d %s", code, body)
	}
	return mustJSON(t, body)["key"].(string)
}

// consoleBuild is a multi-step build whose third step is retried and
// whose fourth fails; it is what docs/console.png shows.
var consoleBuild = [][]ent{
	{ // before the restart
		{"kind": "start", "phase": "preparing", "message": "Preparing build of acme/web@1.4.0", "source": "builder"},
		{"phase": "preparing", "message": "Pulling base image \x1b[1mnode:22-bookworm\x1b[0m", "source": "builder"},
		{"kind": "cache", "phase": "step", "step_index": 1, "total_steps": 4, "message": "FROM node:22-bookworm", "cache_kind": "layer", "cache_status": "hit", "cache_subject": "FROM node:22-bookworm"},
		{"kind": "cache", "phase": "step", "step_index": 2, "total_steps": 4, "message": "COPY package.json package-lock.json ./", "cache_kind": "layer", "cache_status": "hit", "cache_subject": "COPY package*.json ./"},
		{"phase": "step", "step_index": 3, "total_steps": 4, "attempt": 1, "max_attempts": 3, "message": "RUN npm ci", "cache_kind": "layer", "cache_status": "miss", "cache_reason": "missing_or_incompatible", "cache_subject": "RUN npm ci"},
		{"phase": "step", "step_index": 3, "total_steps": 4, "attempt": 1, "max_attempts": 3, "source": "npm", "message": "\x1b[33mnpm warn\x1b[0m deprecated inflight@1.0.6", "level": "warn"},
		{"phase": "step", "step_index": 3, "total_steps": 4, "attempt": 1, "max_attempts": 3, "source": "npm", "message": "\x1b[31mnpm error\x1b[0m network ECONNRESET fetching registry", "level": "error", "kind": "error"},
	},
	{ // after the restart
		{"phase": "step", "step_index": 3, "total_steps": 4, "attempt": 2, "max_attempts": 3, "kind": "retry", "level": "warn", "message": "Retrying RUN npm ci (attempt 2/3)"},
		{"phase": "step", "step_index": 3, "total_steps": 4, "attempt": 2, "max_attempts": 3, "source": "npm", "message": "added 812 packages in 21s"},
		{"phase": "step", "step_index": 3, "total_steps": 4, "attempt": 2, "max_attempts": 3, "kind": "cache", "message": "Stored layer for RUN npm ci", "cache_kind": "layer", "cache_status": "stored"},
		{"phase": "step", "step_index": 4, "total_steps": 4, "message": "RUN npm test", "cache_kind": "layer", "cache_status": "bypass", "cache_reason": "force_upload"},
		{"phase": "step", "step_index": 4, "total_steps": 4, "source": "stdout", "message": "\x1b[32m✓\x1b[0m renders the header (12 ms)\n\x1b[32m✓\x1b[0m streams entries (48 ms)"},
		{"phase": "step", "step_index": 4, "total_steps": 4, "source": "stdout", "message": "\x1b[31m✗\x1b[0m resumes after a restart: expected 12 entries, got 11"},
		{"phase": "step", "step_index": 4, "total_steps": 4, "source": "npm", "level": "error", "kind": "error", "message": "\x1b[31mnpm error\x1b[0m Test failed. See above for more details."},
	},
}

// stamp gives the entries from index from on timestamps a few seconds
// apart, so that groups have durations and the timeline shows something.
func stamp(start time.Time, from int, es []ent) []ent {
	gaps := []int{0, 2100, 1300, 400, 250, 5200, 9800, 600, 4000, 900, 350, 1800, 2400, 300}
	out := make([]ent, len(es))
	for i, e := range es {
		t := start
		for _, g := range gaps[:min(from+i+1, len(gaps))] {
			t = t.Add(time.Duration(g) * time.Millisecond)
		}
		c := ent{"timestamp": t.UTC().Format(time.RFC3339Nano)}
		for k, v := range e {
			c[k] = v
		}
		out[i] = c
	}
	return out
}

func TestConsoleLiveBuild(t *testing.T) {
	chromiumPath(t)
	addr, data := testkit.FreeAddr(t), t.TempDir()
	env := []string{"BUILDLOG_ADMIN_KEY=" + consoleAdmin}
	srv := startServe(t, addr, env, "--addr", addr, "--data", data)
	key := readerKey(t, srv)
	const id = "tb_console"
	if code, body := srv.do("POST", "/v1/templates/tmpl_web/builds", consoleAdmin,
		`{"build_id":"`+id+`","namespace":"acme","name":"web","version":"1.4.0","total_steps":4,"max_attempts":3}`); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}

	p := newPage(t)
	p.do(chromedp.Navigate(srv.URL + "/console/builds/" + id))
	p.enterKey(key)
	p.waitJS("the queued status", `document.getElementById('b-status').dataset.status === 'queued'`, `document.getElementById('b-status').textContent`, 20*time.Second)
	if href := evalJS[string](p, "location.href"); strings.Contains(href, key) {
		t.Fatalf("the key is in the URL: %s", href)
	}
	if got := evalJS[string](p, "sessionStorage.getItem('buildlog.apiKey')"); got != key {
		t.Fatalf("sessionStorage key = %q", got)
	}

	start := time.Now().Add(-35 * time.Second)
	first, second := consoleBuild[0], consoleBuild[1]
	var want []string
	for i, e := range append(slices.Clone(first), second...) {
		msg := e["message"].(string)
		msg, _, _ = strings.Cut(msg, "\n")
		want = append(want, fmt.Sprintf("%d|%s", i, stripANSI(msg)))
	}

	// Live entries appear in order, in two appends.
	appendEntries(t, srv, id, stamp(start, 0, first[:3])...)
	appendEntries(t, srv, id, stamp(start, 3, first[3:])...)
	wantJS, _ := json.Marshal(want[:len(first)])
	p.waitJS("the first entries, in order", "JSON.stringify("+lineRows+") === "+jsQuote(string(wantJS)), lineRows, 20*time.Second)
	p.waitJS("the building status", `document.getElementById('b-status').dataset.status === 'building'`, `document.getElementById('b-status').textContent`, 20*time.Second)

	// The server goes away without warning; the page notices, then resumes
	// from where it was once the server is back on the same port and data.
	srv.kill()
	p.waitJS("the page noticing the drop", `/reconnecting/.test(document.getElementById('b-conn').textContent)`, `document.getElementById('b-conn').textContent`, 20*time.Second)
	srv = startServe(t, addr, env, "--addr", addr, "--data", data)
	appendEntries(t, srv, id, stamp(start, len(first), second)...)
	wantJS, _ = json.Marshal(want)
	p.waitJS("every entry once, in order, after the restart", "JSON.stringify("+lineRows+") === "+jsQuote(string(wantJS)), lineRows, 30*time.Second)
	p.waitJS("the live connection", `document.getElementById('b-conn').textContent === 'live'`, `document.getElementById('b-conn').textContent`, 20*time.Second)
	if got := evalJS[string](p, "document.getElementById('b-count').textContent"); got != fmt.Sprint(len(want)) {
		t.Fatalf("entry count shows %q, want %d", got, len(want))
	}

	// Badges and groups: the cache hit, the retry and the multi-line
	// message's continuation row.
	groups := evalJS[[]string](p, `[...document.querySelectorAll('#rows .row.group')].map(r => r.textContent)`)
	joined := strings.Join(groups, "\n")
	for _, s := range []string{"step 1/4", "cache hit", "step 3/4", "attempt 2/3", "cache miss", "step 4/4"} {
		if !strings.Contains(joined, s) {
			t.Errorf("group headers lack %q:\n%s", s, joined)
		}
	}
	if n := evalJS[int](p, `[...document.querySelectorAll('#rows .row')].filter(r => /streams entries/.test(r.textContent) && !r.querySelector('a.ln')).length`); n != 1 {
		t.Errorf("the second line of a multi-line message is on %d continuation rows, want 1", n)
	}
	if n := evalJS[int](p, `document.querySelectorAll('#rows .msg .a-f2').length`); n == 0 {
		t.Error("no ANSI green span rendered")
	}

	// Finishing the build: the stream ends, the badge and the error detail
	// show how.
	if code, body := srv.do("POST", "/v1/templates/builds/"+id+"/finish", consoleAdmin,
		`{"status":"failed","message":"Step 4/4 RUN npm test failed with exit code 1","error_detail":{"step":"RUN npm test","exit_code":1}}`); code != 200 {
		t.Fatalf("finish: %d %s", code, body)
	}
	p.waitJS("the failed badge", `document.getElementById('b-status').dataset.status === 'failed'`, `document.getElementById('b-status').textContent`, 20*time.Second)
	p.waitJS("the error detail", `/exit_code/.test(document.getElementById('b-terminal').textContent)`, `document.getElementById('b-terminal').textContent`, 20*time.Second)
	p.waitJS("the stream closed", `document.getElementById('b-conn').textContent === ''`, `document.getElementById('b-conn').textContent`, 20*time.Second)
	// The page stops at the end: no stream reopened after the terminal entry.
	logReads := func() int { return strings.Count(srv.out.String(), `"path":"/v1/templates/builds/`+id+`/logs"`) }
	before := logReads()
	if before == 0 {
		t.Fatalf("no log reads found in the request log:\n%s", srv.out)
	}
	time.Sleep(1500 * time.Millisecond) // longer than the first reconnect backoff
	if after := logReads(); after != before {
		t.Errorf("the page read the log %d more times after the build ended", after-before)
	}
	if got := evalJS[string](p, `document.querySelector('#rows .row.terminal .msg').textContent`); !strings.Contains(got, "exit code 1") {
		t.Errorf("terminal row = %q", got)
	}
	if got := evalJS[string](p, `document.querySelector('#timeline .tl-bar.o-failed') ? 'yes' : 'no'`); got != "yes" {
		t.Error("the timeline shows no failed bar")
	}
	p.do(chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`))
	p.screenshot("console-failed-build.png")
	// The total is the build's finished_at - created_at, as the CLI's (the
	// entries' timestamps begin 35 s before the build was created).
	wantTotal := "total " + consoleDuration(t, srv, id)
	p.waitJS("the total", `document.getElementById('b-elapsed-label').textContent + ' ' + document.getElementById('b-elapsed').textContent === `+jsQuote(wantTotal),
		`document.getElementById('b-elapsed-label').textContent + ' ' + document.getElementById('b-elapsed').textContent`, 10*time.Second)
	if got := evalJS[string](p, `document.querySelector('#b-terminal .t-title').textContent`); !strings.HasPrefix(got, "✗ Failed after "+strings.TrimPrefix(wantTotal, "total ")+": ") {
		t.Errorf("terminal banner %q, want the total %s", got, wantTotal)
	}

	// The timestamps toggle hides and shows the time column.
	const tsShown = `getComputedStyle(document.querySelector('#rows .row .ts')).display !== 'none'`
	if !evalJS[bool](p, tsShown) {
		t.Error("timestamps hidden by default")
	}
	p.do(chromedp.Click(chromedp.CSS("#t-ts")))
	if evalJS[bool](p, tsShown) {
		t.Error("timestamps still shown after unticking the toggle")
	}
	p.do(chromedp.Click(chromedp.CSS("#t-ts")))

	// A permalink: clicking a line number selects that line.
	p.do(chromedp.Click(chromedp.CSS(`#rows a.ln[href="#L4"]`)))
	p.waitJS("line 4 selected", `location.hash === '#L4' && document.querySelector('#rows .row.sel')?.dataset.offset === '4'`, `[location.hash, document.querySelector('#rows .row.sel')?.dataset.offset]`, 10*time.Second)
	if got := evalJS[string](p, `document.getElementById('t-follow').getAttribute('aria-pressed')`); got != "false" {
		t.Errorf("follow still on after a permalink: %s", got)
	}
	// Loading a page with a permalink selects the line too (the key stays
	// in the tab's sessionStorage).
	p.do(chromedp.Navigate("about:blank"), chromedp.Navigate(srv.URL+"/console/builds/"+id+"#L9"))
	p.waitJS("line 9 selected on load", `document.querySelector('#rows .row.sel')?.dataset.offset === '9'`, lineRows, 20*time.Second)

	// Search: two matches of "npm error", next and previous.
	p.do(chromedp.SendKeys(chromedp.CSS("#t-search"), "NPM ERROR\r"))
	p.waitJS("the first match", `document.getElementById('t-hits').textContent === '1 / 2' && document.querySelector('#rows .row.cur-match')?.dataset.offset === '6'`,
		`[document.getElementById('t-hits').textContent, document.querySelector('#rows .row.cur-match')?.dataset.offset]`, 10*time.Second)
	p.do(chromedp.Click(chromedp.CSS("#t-next")))
	p.waitJS("the second match", `document.getElementById('t-hits').textContent === '2 / 2' && document.querySelector('#rows .row.cur-match')?.dataset.offset === '13'`,
		`[document.getElementById('t-hits').textContent, document.querySelector('#rows .row.cur-match')?.dataset.offset]`, 10*time.Second)
	if n := evalJS[int](p, `document.querySelectorAll('#rows mark').length`); n < 2 {
		t.Errorf("%d search marks, want 2", n)
	}

	// Level filter: errors only (and the terminal entry, always).
	p.do(chromedp.Evaluate[chromedp.Void](`(s => { s.value = 'error'; s.dispatchEvent(new Event('change')); })(document.getElementById('t-level'))`))
	p.waitJS("errors only", `JSON.stringify(`+lineRows+`.map(s => s.split('|')[0])) === '["6","13","14"]'`, lineRows, 10*time.Second)
	p.do(chromedp.Evaluate[chromedp.Void](`(s => { s.value = 'debug'; s.dispatchEvent(new Event('change')); })(document.getElementById('t-level'))`))
	// The rows are redrawn on the next frame: a click before that lands
	// where step 3's header was under the filter, on another group.
	p.waitJS("every level again", lineRows+`.some(s => s.startsWith('5|'))`, lineRows, 10*time.Second)

	// Collapsing step 3 hides its lines and keeps its header.
	p.do(chromedp.Click(chromedp.CSS(`#rows .row.group[data-group="3"]`)))
	p.waitJS("step 3 collapsed", `!`+lineRows+`.some(s => s.startsWith('5|')) && document.querySelector('#rows .row.group[data-group="3"] .tw').textContent === '▸'`, lineRows, 10*time.Second)

	// Downloads: the NDJSON holds the same entries the API serves.
	dir := t.TempDir()
	p.do(func(ctx context.Context, _ *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dir,
		})
		return chromedp.Void{}, err
	}, chromedp.Click(chromedp.CSS("#t-ndjson")), chromedp.Click(chromedp.CSS("#t-raw")))
	got := waitFile(t, filepath.Join(dir, id+".ndjson"))
	_, api := srv.do("GET", "/v1/templates/builds/"+id+"/logs", key, "", "Accept", "application/x-ndjson")
	if a, b := decodeNDJSON(t, got), decodeNDJSON(t, api); !jsonEqual(a, b) {
		t.Errorf("downloaded NDJSON differs from the API's:\n%s\nvs\n%s", got, api)
	}
	// The button names the file type it saves.
	label := evalJS[string](p, `document.getElementById('t-raw').textContent`)
	ext, ok := strings.CutPrefix(label, "Download ")
	if !ok || !strings.HasPrefix(ext, ".") {
		t.Fatalf("text download button reads %q", label)
	}
	raw := string(waitFile(t, filepath.Join(dir, id+ext)))
	if n := strings.Count(raw, "\n"); n != len(want)+2 { // one multi-line message, the terminal entry
		t.Errorf("raw text has %d lines, want %d:\n%s", n, len(want)+2, raw)
	}
	if strings.Contains(srv.out.String(), key) {
		t.Error("the read key appears in the server log")
	}
}

func TestConsoleLargeLog(t *testing.T) {
	chromiumPath(t)
	addr := testkit.FreeAddr(t)
	srv := startServe(t, addr, []string{"BUILDLOG_ADMIN_KEY=" + consoleAdmin}, "--addr", addr, "--data", t.TempDir())
	const id, total = "tb_big", 100000
	srv.do("POST", "/v1/templates/tmpl_big/builds", consoleAdmin, `{"build_id":"`+id+`"}`)
	for b := 0; b < total/10000; b++ {
		var sb strings.Builder
		for i := b * 10000; i < (b+1)*10000; i++ {
			level := "info"
			if i%1000 == 999 {
				level = "warn"
			}
			fmt.Fprintf(&sb, `{"phase":"step","step_index":%d,"total_steps":100,"level":%q,"message":"line %06d \u001b[36mcompiling\u001b[0m module_%d.go"}`+"\n", i/1000+1, level, i, i)
		}
		code, body := srv.do("POST", "/v1/templates/builds/"+id+"/logs", consoleAdmin, sb.String(), "Content-Type", "application/x-ndjson")
		if code != 200 {
			t.Fatalf("append: %d %s", code, body)
		}
	}
	srv.do("POST", "/v1/templates/builds/"+id+"/finish", consoleAdmin, `{"status":"ready"}`)

	p := newPage(t)
	p.do(chromedp.Navigate(srv.URL + "/console/builds/" + id))
	began := time.Now()
	p.enterKey(readerKey(t, srv))
	p.waitJS("all entries loaded", `document.getElementById('b-count').textContent === '100,001' && document.getElementById('b-status').dataset.status === 'ready'`,
		`[document.getElementById('b-count').textContent, document.getElementById('b-conn').textContent]`, 90*time.Second)
	t.Logf("100,001 entries loaded and shown in %v; JS heap %.0f MiB", time.Since(began).Round(time.Millisecond),
		evalJS[float64](p, "performance.memory ? performance.memory.usedJSHeapSize : 0")/(1<<20))
	t.Logf("of which fetching the JSON pages: %s", evalJS[string](p, `(es => es.length + ' pages, ' + Math.round(es.reduce((s, e) => s + e.duration, 0)) + ' ms')(performance.getEntriesByType('resource').filter(e => /\/logs\?offset=/.test(e.name)))`))

	const rowCount = `document.querySelectorAll('#rows .row').length`
	const maxRows = 200 // the viewport's rows plus the overscan, far below 100,000
	if n := evalJS[int](p, rowCount); n > maxRows || n == 0 {
		t.Fatalf("%d rows in the DOM at the end of the log", n)
	}
	if got := evalJS[string](p, lineRows+".at(-1)"); !strings.HasPrefix(got, "100000|Build ready") {
		t.Fatalf("last row = %q", got)
	}
	// The middle of the log, by scrolling.
	p.do(chromedp.Evaluate[chromedp.Void](`(l => l.scrollTop = l.scrollHeight / 2)(document.getElementById('log'))`))
	p.waitJS("rows of the middle", `(a => a.length > 0 && a.every(s => Math.abs(+s.split('|')[0] - 50000) < 1000))(`+lineRows+`)`, lineRows+".slice(0, 3)", 10*time.Second)
	if n := evalJS[int](p, rowCount); n > maxRows {
		t.Fatalf("%d rows in the DOM mid-log", n)
	}
	if got := evalJS[string](p, `document.getElementById('t-follow').getAttribute('aria-pressed')`); got != "false" {
		t.Errorf("follow still on after scrolling up: %s", got)
	}
	// Follow resumes on demand: back at the end of the log.
	p.do(chromedp.Click(chromedp.CSS("#t-follow")))
	p.waitJS("the end of the log again", lineRows+`.at(-1).startsWith('100000|')`, lineRows+".slice(-2)", 10*time.Second)
	// A permalink far away, and a search that finds one line of 100,000.
	p.do(chromedp.Evaluate[chromedp.Void](`location.hash = '#L1234'`))
	p.waitJS("line 1234 selected", `document.querySelector('#rows .row.sel')?.dataset.offset === '1234'`, lineRows+".slice(0, 3)", 10*time.Second)
	p.do(chromedp.SendKeys(chromedp.CSS("#t-search"), "line 077777\r"))
	p.waitJS("the one match", `document.getElementById('t-hits').textContent === '1 / 1' && document.querySelector('#rows .row.cur-match')?.dataset.offset === '77777'`,
		`document.getElementById('t-hits').textContent`, 20*time.Second)
	if n := evalJS[int](p, rowCount); n > maxRows {
		t.Fatalf("%d rows in the DOM after search", n)
	}
	p.screenshot("console-100k.png")
}

func TestConsoleBuildList(t *testing.T) {
	chromiumPath(t)
	addr := testkit.FreeAddr(t)
	srv := startServe(t, addr, []string{"BUILDLOG_ADMIN_KEY=" + consoleAdmin}, "--addr", addr, "--data", t.TempDir())
	for _, b := range []struct{ id, finish string }{{"tb_a", "ready"}, {"tb_b", "failed"}, {"tb_c", ""}} {
		srv.do("POST", "/v1/templates/tmpl_list/builds", consoleAdmin, `{"build_id":"`+b.id+`"}`)
		appendEntries(t, srv, b.id, ent{"message": "hello from " + b.id})
		if b.finish != "" {
			srv.do("POST", "/v1/templates/builds/"+b.id+"/finish", consoleAdmin, `{"status":"`+b.finish+`"}`)
		}
		time.Sleep(5 * time.Millisecond) // distinct created_at, so the order is defined
	}
	p := newPage(t)
	p.do(chromedp.Navigate(srv.URL + "/console/"))
	// A wrong key is refused and asked for again.
	p.enterKey("bl_not_a_key")
	p.waitJS("the refusal", `/refused/.test(document.querySelector('#key-form .why').textContent) && !document.getElementById('key-form').hidden`,
		`document.querySelector('#key-form .why').textContent`, 20*time.Second)
	p.do(chromedp.Evaluate[chromedp.Void](`document.querySelector('#key-form input').value = ''`))
	p.enterKey(readerKey(t, srv))
	const rows = `[...document.querySelectorAll('#builds tbody tr')].map(r => r.dataset.build + ':' + r.querySelector('.status').dataset.status)`
	p.waitJS("the three builds, newest first", `JSON.stringify(`+rows+`) === '["tb_c:building","tb_b:failed","tb_a:ready"]'`, rows, 20*time.Second)
	p.screenshot("console-list.png")
	// A finished build's duration is its finished_at - created_at.
	if got, want := evalJS[string](p, `document.querySelector('#builds tr[data-build="tb_a"] td:nth-child(5)').textContent`), consoleDuration(t, srv, "tb_a"); got != want {
		t.Errorf("tb_a's duration shows %q, want %q", got, want)
	}
	p.do(chromedp.Click(chromedp.CSS(`#builds tr[data-build="tb_b"] a.build-link`)))
	p.waitJS("the build page of tb_b", `location.pathname.endsWith('/console/builds/tb_b') && document.getElementById('b-status').dataset.status === 'failed'`,
		`[location.pathname, document.getElementById('b-status').textContent]`, 20*time.Second)
	p.waitJS("its entry", lineRows+`[0] === '0|hello from tb_b'`, lineRows, 20*time.Second)
}

func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func jsQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func waitFile(t *testing.T, path string) []byte {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return b
		}
		if time.Now().After(deadline) {
			entries, _ := os.ReadDir(filepath.Dir(path))
			t.Fatalf("no download at %s; the directory holds %v", path, entries)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func decodeNDJSON(t *testing.T, b []byte) []any {
	t.Helper()
	var out []any
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var v any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("bad NDJSON line %q: %v", line, err)
		}
		out = append(out, v)
	}
	return out
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// TestConsoleOmission: a build over a small size cap. The page holds the
// head live, loses its key (revoked: the stream ends and the page asks for
// another) while the build runs far past the cap, and on the new key
// resumes across the dropped range: the notice is drawn as a divider with
// its own counts, search, permalinks on both sides and inside the range,
// the level filter, downloads and follow all work across it.
func TestConsoleOmission(t *testing.T) {
	chromiumPath(t)
	addr := testkit.FreeAddr(t)
	env := []string{"BUILDLOG_ADMIN_KEY=" + consoleAdmin}
	args := []string{"--addr", addr, "--data", t.TempDir(), "--max-log-bytes", "4KiB", "--log-head-bytes", "1KiB"}
	srv := startServe(t, addr, env, args...)
	const id = "tb_capped"
	if code, body := srv.do("POST", "/v1/templates/tmpl_cap/builds", consoleAdmin, `{"build_id":"`+id+`","total_steps":2}`); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	// Step 1 is offsets 0-4, step 2 everything after, so one group spans
	// the dropped range.
	entry := func(i int) ent {
		step := 1
		if i >= 5 {
			step = 2
		}
		return ent{"phase": "step", "step_index": step, "total_steps": 2, "message": fmt.Sprintf("line %04d of a build that prints too much", i)}
	}
	batch := func(from, n int) []ent {
		var es []ent
		for i := from; i < from+n; i++ {
			es = append(es, entry(i))
		}
		return es
	}
	appendEntries(t, srv, id, batch(0, 5)...)
	appendEntries(t, srv, id, batch(5, 5)...)

	code, body := srv.do("POST", "/v1/keys", consoleAdmin, `{"team":"default","scopes":["read"],"name":"console"}`)
	if code != 201 {
		t.Fatalf("creating a read key: %d %s", code, body)
	}
	first := mustJSON(t, body)

	p := newPage(t)
	p.do(chromedp.Navigate(srv.URL + "/console/builds/" + id))
	p.enterKey(first["key"].(string))
	const lastOffset = lineRows + `.at(-1)?.split('|')[0]`
	p.waitJS("the head, live", `document.getElementById('b-conn').textContent === 'live' && `+lastOffset+` === '9'`, lineRows, 20*time.Second)

	// The key goes, then the server: a stream token outlives its key, so
	// the restart is what ends the stream, and the revoked key then keeps
	// the page waiting for another while the build runs past its cap.
	if code, body := srv.do("DELETE", "/v1/keys/"+first["id"].(string), consoleAdmin, ""); code/100 != 2 {
		t.Fatalf("revoking the key: %d %s", code, body)
	}
	srv.kill()
	srv = startServe(t, addr, env, args...)
	p.waitJS("the key asked for again", `!document.getElementById('key-form').hidden`, `document.getElementById('b-conn').textContent`, 20*time.Second)
	for b := 10; b < 100; b += 5 {
		appendEntries(t, srv, id, batch(b, 5)...)
	}
	var build struct {
		Omitted *struct{ From, To uint64 } `json:"omitted"`
	}
	_, body = srv.do("GET", "/v1/templates/builds/"+id, consoleAdmin, "")
	if err := json.Unmarshal(body, &build); err != nil || build.Omitted == nil || build.Omitted.From > 10 || build.Omitted.To < 50 || build.Omitted.To >= 99 {
		t.Fatalf("want a dropped range holding offsets 10-50 and keeping the last line: %s", body)
	}
	// What the page will be sent from offset 10, where it stands: the
	// notice for the part of the range from there.
	_, body = srv.do("GET", fmt.Sprintf("/v1/templates/builds/%s/logs?offset=10&limit=1", id), consoleAdmin, "", "Accept", "application/json")
	var page struct {
		Entries []struct {
			Offset uint64 `json:"offset"`
			Meta   struct {
				From    uint64 `json:"omitted_from"`
				Entries uint64 `json:"omitted_entries"`
				Bytes   uint64 `json:"omitted_bytes"`
			} `json:"result_metadata"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(body, &page); err != nil || len(page.Entries) != 1 || page.Entries[0].Meta.From != 10 {
		t.Fatalf("want the notice from offset 10: %s", body)
	}
	notice := page.Entries[0]
	wantDivider := buildlog.Thousands(notice.Meta.Entries) + " lines (" + buildlog.HumanBytes(notice.Meta.Bytes) + ") omitted"

	key := readerKey(t, srv)
	p.do(chromedp.Evaluate[chromedp.Void](`document.querySelector('#key-form input').value = ''`))
	p.enterKey(key)
	const divider = `document.querySelector('#rows .row.omitted')`
	p.waitJS("the divider and the lines after it", divider+`?.textContent === `+jsQuote("⋮"+wantDivider)+` && `+lastOffset+` === '99'`,
		`[`+divider+`?.textContent, `+lineRows+`]`, 30*time.Second)
	p.waitJS("live again", `document.getElementById('b-conn').textContent === 'live'`, `document.getElementById('b-conn').textContent`, 20*time.Second)
	// The line numbers are the offsets, on both sides of the divider (whose
	// own is the range's last); the group of step 2 goes on across it.
	var want []string
	for i := 0; i < 10; i++ {
		want = append(want, fmt.Sprint(i))
	}
	for i := notice.Offset; i < 100; i++ {
		want = append(want, fmt.Sprint(i))
	}
	p.do(chromedp.Click(chromedp.CSS("#t-follow")), chromedp.Evaluate[chromedp.Void](`document.getElementById('log').scrollTop = 0`))
	got := evalJS[[]string](p, lineRows+`.map(s => s.split('|')[0])`)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("line numbers %v, want %v", got, want)
	}
	if n := evalJS[int](p, `document.querySelectorAll('#rows .row.group').length`); n != 2 {
		t.Errorf("%d group headers, want 2 (step 2 goes on across the divider)", n)
	}
	if got, want := evalJS[string](p, `document.getElementById('b-count').textContent`),
		fmt.Sprintf("%d (%s omitted)", 10+99-notice.Offset, buildlog.Thousands(notice.Meta.Entries)); got != want {
		t.Errorf("entry count shows %q, want %q", got, want)
	}
	p.screenshot("console-omitted.png")

	// Search finds a line after the gap, and permalinks work on both sides
	// and inside the dropped range (its divider).
	p.do(chromedp.SendKeys(chromedp.CSS("#t-search"), "line 0095\r"))
	p.waitJS("the match after the gap", `document.getElementById('t-hits').textContent === '1 / 1' && document.querySelector('#rows .row.cur-match')?.dataset.offset === '95'`,
		`document.getElementById('t-hits').textContent`, 10*time.Second)
	for _, c := range []struct{ hash, want string }{{"#L95", "95"}, {"#L3", "3"}, {"#L50", fmt.Sprint(notice.Offset)}, {"#L97", "97"}} {
		p.do(chromedp.Evaluate[chromedp.Void](`location.hash = '` + c.hash + `'`))
		p.waitJS(c.hash+" selected", `document.querySelector('#rows .row.sel')?.dataset.offset === '`+c.want+`'`,
			`[location.hash, document.querySelector('#rows .row.sel')?.dataset.offset]`, 10*time.Second)
	}
	if n := evalJS[int](p, `document.querySelectorAll('#rows .row.omitted.sel').length`); n != 0 {
		t.Error("the divider still selected after #L97")
	}
	// The level filter never hides the divider.
	p.do(chromedp.Evaluate[chromedp.Void](`(s => { s.value = 'error'; s.dispatchEvent(new Event('change')); })(document.getElementById('t-level'))`))
	p.waitJS("only the divider", `JSON.stringify([...document.querySelectorAll('#rows .row:not(.group)')].map(r => r.dataset.offset)) === '["`+fmt.Sprint(notice.Offset)+`"]'`,
		lineRows, 10*time.Second)
	p.do(chromedp.Evaluate[chromedp.Void](`(s => { s.value = 'debug'; s.dispatchEvent(new Event('change')); })(document.getElementById('t-level'))`))

	// Downloads are what the page holds: offsets 0-9 as they came live
	// (the cap has since dropped some of them), then the API's read from
	// offset 10 exactly, notice included.
	dir := t.TempDir()
	p.do(func(ctx context.Context, _ *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dir,
		})
		return chromedp.Void{}, err
	}, chromedp.Click(chromedp.CSS("#t-ndjson")))
	dl := waitFile(t, filepath.Join(dir, id+".ndjson"))
	_, api := srv.do("GET", "/v1/templates/builds/"+id+"/logs?offset=10", key, "", "Accept", "application/x-ndjson")
	held := decodeNDJSON(t, dl)
	if len(held) < 10 {
		t.Fatalf("downloaded NDJSON holds %d entries:\n%s", len(held), dl)
	}
	for i, e := range held[:10] {
		if off := e.(map[string]any)["offset"]; off != float64(i) {
			t.Errorf("downloaded entry %d has offset %v", i, off)
		}
	}
	if a, b := held[10:], decodeNDJSON(t, api); !jsonEqual(a, b) {
		t.Errorf("downloaded NDJSON after offset 10 differs from the API's:\n%s\nvs\n%s", dl, api)
	}

	// Follow goes on past the divider: new lines arrive live and stay in
	// view; the range grows under the cap, which a reload shows.
	p.do(chromedp.Click(chromedp.CSS("#t-follow")))
	appendEntries(t, srv, id, batch(100, 5)...)
	p.waitJS("the live lines after the divider", lastOffset+` === '104'`, lineRows+".slice(-3)", 20*time.Second)
	if code, body := srv.do("POST", "/v1/templates/builds/"+id+"/finish", consoleAdmin, `{"status":"ready"}`); code != 200 {
		t.Fatalf("finish: %d %s", code, body)
	}
	p.waitJS("the end", `document.getElementById('b-status').dataset.status === 'ready' && `+lastOffset+` === '105'`, lineRows+".slice(-3)", 20*time.Second)
	p.do(chromedp.Navigate("about:blank"), chromedp.Navigate(srv.URL+"/console/builds/"+id+"#L104"))
	p.waitJS("line 104 selected on load", `document.querySelector('#rows .row.sel')?.dataset.offset === '104' && document.querySelectorAll('#rows .row.omitted').length === 1`,
		lineRows, 20*time.Second)
}

// consoleDuration is build id's finished_at - created_at as the console
// writes durations (850ms, 4.01s, 12.3s, 4m 05s), from the times at the
// millisecond precision a browser parses them with.
func consoleDuration(t *testing.T, srv *proc, id string) string {
	t.Helper()
	var b struct {
		CreatedAt  time.Time  `json:"created_at"`
		FinishedAt *time.Time `json:"finished_at"`
	}
	_, body := srv.do("GET", "/v1/templates/builds/"+id, consoleAdmin, "")
	if err := json.Unmarshal(body, &b); err != nil || b.FinishedAt == nil {
		t.Fatalf("want a finished build: %s", body)
	}
	ms := b.FinishedAt.UnixMilli() - b.CreatedAt.UnixMilli()
	switch s := float64(ms) / 1000; {
	case ms < 1000:
		return fmt.Sprintf("%dms", ms)
	case s < 10:
		return strconv.FormatFloat(s, 'f', 2, 64) + "s"
	case s < 60:
		return strconv.FormatFloat(s, 'f', 1, 64) + "s"
	case ms < 3600_000:
		return fmt.Sprintf("%dm %02ds", ms/60_000, ms/1000%60)
	default:
		return fmt.Sprintf("%dh %02dm", ms/3600_000, ms/60_000%60)
	}
}
