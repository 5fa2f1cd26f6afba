package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"buildlog/internal/testkit"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestCLI runs the scripts in testdata/script: each starts a real
// `buildlog serve` on a free port and drives the real binary (built by
// TestMain) the way a person would, in several processes at once.
//
// Besides testscript's own commands, scripts have:
//
//	waitserver            wait until $BUILDLOG_URL/healthz answers
//	waitbuild ID [N]      wait until build ID exists with at least N entries
//	receiver              start a webhook receiver at $RECEIVER that saves
//	                      the n-th request's body as $WORK/hook-n.json
func TestCLI(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: filepath.Join("testdata", "script"),
		Setup: func(env *testscript.Env) error {
			addr, err := testkit.FreeLoopback()
			if err != nil {
				return err
			}
			env.Setenv("PATH", filepath.Dir(binPath)+string(os.PathListSeparator)+env.Getenv("PATH"))
			env.Setenv("ADDR", addr)
			env.Setenv("BUILDLOG_URL", "http://"+addr)
			env.Setenv("BUILDLOG_ADMIN_KEY", "admin_cli_test")
			env.Setenv("BUILDLOG_API_KEY", "admin_cli_test")
			env.Setenv("TZ", "UTC")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"receiver": func(ts *testscript.TestScript, neg bool, args []string) {
				dir := ts.Getenv("WORK")
				var n atomic.Int32
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					b, _ := io.ReadAll(r.Body)
					name := filepath.Join(dir, fmt.Sprintf("hook-%d.json", n.Add(1)))
					// Renamed into place, so a script never reads half a body.
					if os.WriteFile(name+".tmp", b, 0o644) == nil {
						os.Rename(name+".tmp", name)
					}
					w.WriteHeader(http.StatusNoContent)
				}))
				ts.Defer(srv.Close)
				ts.Setenv("RECEIVER", srv.URL)
			},
			"waitserver": func(ts *testscript.TestScript, neg bool, args []string) {
				eventually(ts, func() (bool, string) {
					r, err := http.Get(ts.Getenv("BUILDLOG_URL") + "/healthz")
					if err != nil {
						return false, err.Error()
					}
					r.Body.Close()
					return r.StatusCode == 200, r.Status
				})
			},
			"waitbuild": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) < 1 || len(args) > 2 {
					ts.Fatalf("usage: waitbuild ID [min-entries]")
				}
				min := 0
				if len(args) == 2 {
					min, _ = strconv.Atoi(args[1])
				}
				eventually(ts, func() (bool, string) {
					req, _ := http.NewRequest("GET", ts.Getenv("BUILDLOG_URL")+"/v1/templates/builds/"+args[0], nil)
					req.Header.Set("Authorization", "Bearer "+ts.Getenv("BUILDLOG_ADMIN_KEY"))
					r, err := http.DefaultClient.Do(req)
					if err != nil {
						return false, err.Error()
					}
					defer r.Body.Close()
					var b struct {
						EntryCount int `json:"entry_count"`
					}
					json.NewDecoder(r.Body).Decode(&b)
					return r.StatusCode == 200 && b.EntryCount >= min, fmt.Sprintf("%s, %d entries", r.Status, b.EntryCount)
				})
			},
		},
	})
}

// eventually polls cond for up to 60 s: generous, since several test
// processes share two cores (20 s was once too short for a `buildlog run`
// under -race to send its first append).
func eventually(ts *testscript.TestScript, cond func() (bool, string)) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("gave up waiting: %s", state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
