package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
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
			addr, hookAddr := freeAddr(t), freeAddr(t)
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

			type got struct {
				id, sig string
				body    []byte
			}
			var (
				mu   sync.Mutex
				reqs []got
			)
			arrived := make(chan struct{}, 100)
			ln, err := net.Listen("tcp", hookAddr)
			if err != nil {
				t.Fatal(err)
			}
			rs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				reqs = append(reqs, got{r.Header.Get("Buildlog-Delivery"), r.Header.Get("Buildlog-Signature"), b})
				mu.Unlock()
				arrived <- struct{}{}
			})}
			go rs.Serve(ln)
			t.Cleanup(func() { rs.Close() })

			p = startServe(t, addr, env, args...)
			select {
			case <-arrived:
			case <-time.After(60 * time.Second): // an attempt cut by the kill waits out its claim (30 s)
				t.Fatalf("no delivery within 60 s of the restart\n%s", p.out)
			}
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
			mu.Lock()
			defer mu.Unlock()
			if len(reqs) != 1 {
				t.Fatalf("receiver got %d requests, want exactly 1", len(reqs))
			}
			r := reqs[0]
			var ev struct {
				ID, Type string
				Build    struct {
					BuildID string `json:"build_id"`
					Status  string
				}
			}
			json.Unmarshal(r.body, &ev)
			if ev.ID != r.id || ev.Type != "build.finished" || ev.Build.BuildID != "tb_hook" || ev.Build.Status != "ready" {
				t.Errorf("delivered %s (Buildlog-Delivery %s)", r.body, r.id)
			}
			ts, mac, _ := strings.Cut(strings.TrimPrefix(r.sig, "t="), ",v1=")
			m := hmac.New(sha256.New, []byte(hook["secret"].(string)))
			m.Write([]byte(ts + "."))
			m.Write(r.body)
			if hex.EncodeToString(m.Sum(nil)) != mac {
				t.Errorf("signature %q does not verify", r.sig)
			}
		})
	}
}
