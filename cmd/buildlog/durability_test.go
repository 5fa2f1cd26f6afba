package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/sse"
	"buildlog/internal/wire"
)

// An acknowledged entry survives kill -9: every acked batch is there after
// a restart, with the same offsets and bytes, and appends go on at the
// right offset.
func TestAckedEntriesSurviveKill9(t *testing.T) {
	data := t.TempDir()
	addr := freeAddr(t)
	env := []string{"BUILDLOG_ADMIN_KEY=k"}
	p := startServe(t, addr, env, "--addr", addr, "--data", data)
	if code, body := p.do("POST", "/v1/templates/tmpl_k/builds", "k", `{"build_id":"tb_kill"}`); code != 201 {
		t.Fatalf("%d %s", code, body)
	}

	// Several producers append concurrently; each records what was acked.
	type acked struct {
		first   uint64
		entries []buildlog.Entry
	}
	var mu sync.Mutex
	var acks []acked
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				n := 1 + rand.IntN(300)
				es := make([]buildlog.Entry, n)
				for j := range es {
					es[j] = buildlog.Entry{Timestamp: "2026-03-17T00:00:12.5+01:00", Kind: "message", Level: "warn",
						Message: fmt.Sprintf("w%d b%d e%d %s", w, i, j, strings.Repeat("x", rand.IntN(100)))}
				}
				body, _ := json.Marshal(es)
				req, _ := http.NewRequest("POST", p.URL+"/v1/templates/builds/tb_kill/logs", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer k")
				req.Header.Set("Content-Type", "application/json")
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					return // the server died mid-request: not acknowledged
				}
				var reply struct {
					First uint64 `json:"first_offset"`
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 200 || json.Unmarshal(b, &reply) != nil {
					return
				}
				mu.Lock()
				acks = append(acks, acked{reply.First, es})
				mu.Unlock()
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	p.kill()
	close(stop)
	wg.Wait()
	if len(acks) < 10 {
		t.Fatalf("only %d batches acked before the kill", len(acks))
	}

	p = startServe(t, addr, env, "--addr", addr, "--data", data)
	stored := map[uint64][]byte{}
	req, _ := http.NewRequest("GET", p.URL+"/v1/templates/builds/tb_kill/logs", nil)
	req.Header.Set("Authorization", "Bearer k")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rd := sse.NewReader(res.Body)
	var n uint64
	for ; ; n++ {
		ev, err := rd.Next()
		if err != nil {
			break
		}
		if ev.ID != fmt.Sprint(n) {
			t.Fatalf("after restart, event %d has id %s", n, ev.ID)
		}
		stored[n] = ev.Data
	}
	res.Body.Close()
	total := 0
	for _, a := range acks {
		for j := range a.entries {
			e := a.entries[j]
			e.BuildID, e.TemplateID, e.Offset = "tb_kill", "tmpl_k", a.first+uint64(j)
			want := wire.AppendEntry(nil, &e)
			if got := stored[e.Offset]; !bytes.Equal(got, want) {
				t.Fatalf("acked entry at %d:\n got %s\nwant %s", e.Offset, got, want)
			}
			total++
		}
	}
	code, body := p.do("POST", "/v1/templates/builds/tb_kill/logs", "k", `[{"message":"after"}]`)
	if code != 200 || mustJSON(t, body)["first_offset"] != float64(n) {
		t.Fatalf("append after restart: %d %s, want first_offset %d", code, body, n)
	}
	t.Logf("%d acked entries in %d batches survived; %d stored", total, len(acks), n)
}
