package main

import (
	"encoding/json"
	"testing"
	"time"

	"buildlog/internal/testkit"
)

// A build finished just before kill -9 is delivered after the restart,
// as one event: the event was committed with the finish, and the receiver
// was not even up before the kill, so only the restarted server can have
// delivered it.
func TestWebhookSurvivesKill9(t *testing.T) {
	for _, store := range []string{"sqlite", "postgres"} {
		t.Run(store, func(t *testing.T) {
			args := []string{"--webhook-allow-private"}
			if store == "postgres" {
				args = append(args, "--store", freshDatabase(t))
			} else {
				args = append(args, "--data", t.TempDir())
			}
			addr, hookAddr := testkit.FreeAddr(t), testkit.FreeAddr(t)
			args = append(args, "--addr", addr)
			env := []string{"BUILDLOG_ADMIN_KEY=k"}
			p := startServe(t, addr, env, args...)

			code, body := p.do("POST", "/v1/webhooks", "k", `{"url":"http://`+hookAddr+`/hook","events":["build.finished"]}`)
			if code != 201 {
				t.Fatalf("create hook: %d %s", code, body)
			}
			hook := mustJSON(t, body)
			p.do("POST", "/v1/templates/tmpl/builds", "k", `{"build_id":"tb_hook"}`)
			p.do("POST", "/v1/templates/builds/tb_hook/logs", "k", `[{"message":"one"}]`)
			if code, body := p.do("POST", "/v1/templates/builds/tb_hook/finish", "k", `{"status":"ready"}`); code != 200 {
				t.Fatalf("finish: %d %s", code, body)
			}
			p.kill()

			rc := testkit.NewReceiverOn(t, hookAddr, nil)
			p = startServe(t, addr, env, args...)
			// An attempt cut by the kill waits out its claim (30 s).
			r := rc.NextWithin(t, 60*time.Second)
			deadline := time.Now().Add(20 * time.Second)
			for {
				_, body := p.do("GET", "/v1/webhooks/"+hook["id"].(string)+"/deliveries", "k", "")
				var ds struct {
					Deliveries []struct{ Result string }
				}
				json.Unmarshal(body, &ds)
				if len(ds.Deliveries) > 0 && ds.Deliveries[0].Result == "delivered" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no delivered record: %s", body)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if n := rc.Count(); n != 1 {
				t.Fatalf("receiver got %d requests, want exactly 1", n)
			}
			ev := r.Event()
			if ev.ID != r.Header.Get("Buildlog-Delivery") || ev.Type != "build.finished" || ev.Build == nil || ev.Build.ID != "tb_hook" || ev.Build.Status != "ready" {
				t.Errorf("delivered %s (Buildlog-Delivery %s)", r.Body, r.Header.Get("Buildlog-Delivery"))
			}
			testkit.Verify(t, hook["secret"].(string), r)
		})
	}
}
