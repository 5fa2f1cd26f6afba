package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"buildlog/internal/testkit"
)

// fleetProducer appends small idempotent batches to its own build, the way
// a build farm's builders do, and remembers what was acknowledged.
type fleetProducer struct {
	build   string
	next    uint64   // where the next batch goes
	acked   []string // message of every acknowledged entry, by offset
	pending []string // the batch in flight when the server died
	seq     int
}

func (f *fleetProducer) post(c *http.Client, base string, msgs []string) (int, error) {
	es := make([]map[string]string, len(msgs))
	for i, m := range msgs {
		es[i] = map[string]string{"message": m}
	}
	body, _ := json.Marshal(map[string]any{"entries": es, "first_offset": f.next})
	req, _ := http.NewRequest("POST", base+"/v1/templates/builds/"+f.build+"/logs", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer k")
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		return 0, err
	}
	return res.StatusCode, nil
}

// Two kill -9s of a server taking small appends from 240 builds at once,
// so that every group the writer commits holds many builds' batches.
// After each restart, every acknowledged entry of every build is there, at
// the offset it was acknowledged at, in its own build and nowhere else,
// and the logs are dense: the retry of each batch in flight at the kill
// lands exactly once.
func TestFleetCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 under a fleet of producers")
	}
	const builds = 240
	data := t.TempDir()
	addr := testkit.FreeAddr(t)
	env := []string{"BUILDLOG_ADMIN_KEY=k"}
	args := []string{"--addr", addr, "--data", data, "--rate-per-key", "0"}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: builds}}
	defer client.CloseIdleConnections()

	fleet := make([]*fleetProducer, builds)
	for i := range fleet {
		fleet[i] = &fleetProducer{build: fmt.Sprintf("tb_fleet_%03d", i)}
	}
	for cycle := range 3 {
		p := startServe(t, addr, env, args...)
		if cycle == 0 {
			for _, f := range fleet {
				if code, body := p.do("POST", "/v1/templates/tmpl_fleet/builds", "k", `{"build_id":"`+f.build+`"}`); code != 201 {
					t.Fatalf("%d %s", code, body)
				}
			}
		}
		for _, f := range fleet {
			if f.pending == nil {
				continue
			}
			if code, err := f.post(client, p.URL, f.pending); err != nil || code != 200 {
				t.Fatalf("cycle %d: retry of %s's batch at %d: %d %v", cycle, f.build, f.next, code, err)
			}
			f.acked, f.next, f.pending = append(f.acked, f.pending...), f.next+uint64(len(f.pending)), nil
		}
		verifyFleet(t, p, cycle, fleet)
		if cycle == 2 {
			break
		}

		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, f := range fleet {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					msgs := make([]string, 1+f.seq%10)
					for j := range msgs {
						msgs[j] = fmt.Sprintf("%s c%d s%d e%d", f.build, cycle, f.seq, j)
					}
					f.seq++
					code, err := f.post(client, p.URL, msgs)
					if err != nil {
						f.pending = msgs // the server died: not acknowledged
						return
					}
					if code != 200 {
						t.Errorf("cycle %d: append to %s at %d: %d", cycle, f.build, f.next, code)
						return
					}
					f.acked, f.next = append(f.acked, msgs...), f.next+uint64(len(msgs))
				}
			})
		}
		time.Sleep(1500 * time.Millisecond)
		p.kill()
		close(stop)
		wg.Wait()
		client.CloseIdleConnections()
		if t.Failed() {
			return
		}
	}
	total := 0
	for _, f := range fleet {
		total += len(f.acked)
	}
	t.Logf("%d entries acknowledged by %d builds over 2 kill -9s", total, builds)
}

// verifyFleet checks every build's stored log against what its producer
// had acknowledged.
func verifyFleet(t *testing.T, p *proc, cycle int, fleet []*fleetProducer) {
	t.Helper()
	for _, f := range fleet {
		stored := readAll(t, p, f.build)
		if len(stored) != len(f.acked) {
			t.Fatalf("cycle %d: %s holds %d entries, %d were acknowledged", cycle, f.build, len(stored), len(f.acked))
		}
		for off, line := range stored {
			var e struct {
				BuildID string `json:"build_id"`
				Offset  uint64 `json:"offset"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(line, &e); err != nil {
				t.Fatalf("cycle %d: %s offset %d: %s", cycle, f.build, off, line)
			}
			if e.BuildID != f.build || e.Offset != uint64(off) || e.Message != f.acked[off] {
				t.Fatalf("cycle %d: %s offset %d holds %s, want %q", cycle, f.build, off, line, f.acked[off])
			}
		}
	}
}
