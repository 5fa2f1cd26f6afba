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
	"buildlog/internal/testkit"
	"buildlog/internal/wire"
)

// batchRec is a batch a producer sent: where it was acknowledged, or that
// its reply never came.
type batchRec struct {
	entries []buildlog.Entry
	first   uint64
	acked   bool
}

// crashProducer appends to one build. With idem it sends first_offset, so
// a batch in flight at a crash is retried after the restart and must land
// exactly once.
type crashProducer struct {
	name    string // unique, so every message is
	build   string
	idem    bool
	next    uint64    // idem: the offset the next batch goes at
	pending *batchRec // idem: in flight at the crash
	seq     int
}

func (c *crashProducer) batch(rng *rand.Rand, cycle int) []buildlog.Entry {
	n := 1 + rng.IntN(120)
	es := make([]buildlog.Entry, n)
	levels := []buildlog.Level{buildlog.LevelDebug, buildlog.LevelInfo, buildlog.LevelWarn, buildlog.LevelError}
	for j := range es {
		es[j] = buildlog.Entry{
			Timestamp: fmt.Sprintf("2026-03-17T00:%02d:%02d.%06d+02:00", cycle, rng.IntN(60), rng.IntN(1e6)),
			Kind:      buildlog.KindMessage,
			Level:     levels[rng.IntN(len(levels))],
			Message:   fmt.Sprintf("%s c%d s%d e%d \"ü\t<&> %s", c.name, cycle, c.seq, j, strings.Repeat("z", rng.IntN(200))),
		}
	}
	c.seq++
	return es
}

func postBatch(url string, es []buildlog.Entry, first *uint64) (uint64, int, error) {
	var body []byte
	if first != nil {
		body, _ = json.Marshal(map[string]any{"entries": es, "first_offset": *first})
	} else {
		body, _ = json.Marshal(es)
	}
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer k")
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, 0, err
	}
	var reply struct {
		First uint64 `json:"first_offset"`
	}
	if res.StatusCode == 200 {
		if err := json.Unmarshal(b, &reply); err != nil {
			return 0, 0, err
		}
	}
	return reply.First, res.StatusCode, nil
}

// An acknowledged entry survives kill -9: every acked batch is there after
// a restart, with the same offsets and bytes, and appends go on at the
// right offset.
func TestAckedEntriesSurviveKill9(t *testing.T) {
	data := t.TempDir()
	addr := testkit.FreeAddr(t)
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
				first, code, err := postBatch(p.URL+"/v1/templates/builds/tb_kill/logs", es, nil)
				if err != nil || code != 200 {
					return // the server died mid-request: not acknowledged
				}
				mu.Lock()
				acks = append(acks, acked{first, es})
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
	stored := readAll(t, p, "tb_kill")
	n := uint64(len(stored))
	total := 0
	for _, a := range acks {
		for j := range a.entries {
			e := a.entries[j]
			e.BuildID, e.TemplateID, e.Offset = "tb_kill", "tmpl_k", a.first+uint64(j)
			want := wire.AppendEntry(nil, &e)
			if got := at2(stored, e.Offset); !bytes.Equal(got, want) {
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

// Five times: heavy concurrent ingest, kill -9 in the middle of it,
// restart. After each restart every acknowledged entry is there with the
// same offset and bytes, nothing is there twice, batches are whole or
// absent, and the idempotent retry of each batch that was in flight lands
// exactly once.
func TestCrashLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("five kill -9 cycles")
	}
	data := t.TempDir()
	addr := testkit.FreeAddr(t)
	env := []string{"BUILDLOG_ADMIN_KEY=k"}
	args := []string{"--addr", addr, "--data", data, "--rate-per-key", "0"}

	producers := []*crashProducer{
		{build: "tb_idem0", idem: true}, {build: "tb_idem1", idem: true}, {build: "tb_idem2", idem: true},
		{build: "tb_shared"}, {build: "tb_shared"}, {build: "tb_shared"},
	}
	for i, c := range producers {
		c.name = fmt.Sprintf("p%d", i)
	}
	var mu sync.Mutex
	sent := map[string][]*batchRec{} // by build, every batch ever sent
	totalAcked := 0
	retried, landedBefore := 0, 0

	for cycle := range 5 {
		p := startServe(t, addr, env, args...)
		if cycle == 0 {
			for _, b := range []string{"tb_idem0", "tb_idem1", "tb_idem2", "tb_shared"} {
				if code, body := p.do("POST", "/v1/templates/tmpl_crash/builds", "k", `{"build_id":"`+b+`"}`); code != 201 {
					t.Fatalf("%d %s", code, body)
				}
			}
		}
		// Retry what was in flight at the last crash, as a producer would.
		for _, c := range producers {
			if c.pending == nil {
				continue
			}
			// Whether the batch landed before the crash decides nothing for
			// the producer; the test counts both cases to show both happen.
			_, body := p.do("GET", "/v1/templates/builds/"+c.build, "k", "")
			if uint64(mustJSON(t, body)["next_offset"].(float64)) > c.pending.first {
				landedBefore++
			}
			retried++
			first, code, err := postBatch(p.URL+"/v1/templates/builds/"+c.build+"/logs", c.pending.entries, &c.pending.first)
			if err != nil || code != 200 || first != c.pending.first {
				t.Fatalf("cycle %d: retry of %s's in-flight batch at %d: %d %v (first_offset %d)", cycle, c.build, c.pending.first, code, err, first)
			}
			c.pending.acked = true
			c.next = first + uint64(len(c.pending.entries))
			c.pending = nil
		}
		verify(t, p, cycle, producers, sent)

		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i, c := range producers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(cycle), uint64(i)))
				url := p.URL + "/v1/templates/builds/" + c.build + "/logs"
				for {
					select {
					case <-stop:
						return
					default:
					}
					rec := &batchRec{entries: c.batch(rng, cycle)}
					var firstp *uint64
					if c.idem {
						rec.first = c.next
						firstp = &rec.first
					}
					mu.Lock()
					sent[c.build] = append(sent[c.build], rec)
					mu.Unlock()
					first, code, err := postBatch(url, rec.entries, firstp)
					if err != nil {
						if c.idem {
							c.pending = rec
						}
						return // the server died: not acknowledged
					}
					if code != 200 {
						t.Errorf("cycle %d: append to %s: %d", cycle, c.build, code)
						return
					}
					mu.Lock()
					rec.first, rec.acked = first, true
					totalAcked += len(rec.entries)
					mu.Unlock()
					if c.idem {
						c.next = first + uint64(len(rec.entries))
					}
				}
			}()
		}
		time.Sleep(time.Duration(500+rand.IntN(400)) * time.Millisecond)
		p.kill()
		close(stop)
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	p := startServe(t, addr, env, args...)
	for _, c := range producers {
		if c.pending != nil {
			first, code, err := postBatch(p.URL+"/v1/templates/builds/"+c.build+"/logs", c.pending.entries, &c.pending.first)
			if err != nil || code != 200 || first != c.pending.first {
				t.Fatalf("final retry of %s: %d %v", c.build, code, err)
			}
			c.pending.acked = true
			c.next = first + uint64(len(c.pending.entries))
			c.pending = nil
		}
	}
	verify(t, p, 5, producers, sent)
	t.Logf("%d entries acknowledged over 5 kill -9 cycles; %d in-flight batches retried, %d of them had landed before the kill",
		totalAcked, retried, landedBefore)
}

// readAll replays a build's whole log as SSE data lines by offset.
func readAll(t *testing.T, p *proc, build string) [][]byte {
	t.Helper()
	req, _ := http.NewRequest("GET", p.URL+"/v1/templates/builds/"+build+"/logs", nil)
	req.Header.Set("Authorization", "Bearer k")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	rd := sse.NewReader(res.Body)
	var out [][]byte
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("replay of %s: %v", build, err)
		}
		if ev.ID != fmt.Sprint(len(out)) {
			t.Fatalf("replay of %s: event %d has id %s", build, len(out), ev.ID)
		}
		out = append(out, ev.Data)
	}
}

func verify(t *testing.T, p *proc, cycle int, producers []*crashProducer, sent map[string][]*batchRec) {
	t.Helper()
	for _, build := range []string{"tb_idem0", "tb_idem1", "tb_idem2", "tb_shared"} {
		stored := readAll(t, p, build)
		want := func(e buildlog.Entry, off uint64) []byte {
			e.BuildID, e.TemplateID, e.Offset = build, "tmpl_crash", off
			return wire.AppendEntry(nil, &e)
		}
		// Index stored entries by message: each message is unique, so
		// a second occurrence is a duplicate.
		at := map[string]uint64{}
		for off, line := range stored {
			var e buildlog.Entry
			if err := json.Unmarshal(line, &e); err != nil {
				t.Fatalf("cycle %d: %s offset %d: %s", cycle, build, off, line)
			}
			if prev, dup := at[e.Message]; dup {
				t.Fatalf("cycle %d: %s: %q stored at %d and %d", cycle, build, e.Message, prev, off)
			}
			at[e.Message] = uint64(off)
		}
		covered := 0
		for _, rec := range sent[build] {
			off, present := at[rec.entries[0].Message]
			if rec.acked && (!present || off != rec.first) {
				t.Fatalf("cycle %d: %s: acked batch at %d is at %d (present %v)", cycle, build, rec.first, off, present)
			}
			if !present {
				for _, e := range rec.entries {
					if _, ok := at[e.Message]; ok {
						t.Fatalf("cycle %d: %s: part of a batch stored", cycle, build)
					}
				}
				continue
			}
			// Present: whole, contiguous, byte for byte.
			for j, e := range rec.entries {
				o := off + uint64(j)
				if o >= uint64(len(stored)) || !bytes.Equal(stored[o], want(e, o)) {
					t.Fatalf("cycle %d: %s offset %d:\n got %s\nwant %s", cycle, build, o, at2(stored, o), want(e, o))
				}
			}
			covered += len(rec.entries)
		}
		if covered != len(stored) {
			t.Fatalf("cycle %d: %s holds %d entries, %d of them from batches sent", cycle, build, len(stored), covered)
		}
	}
	// For the idempotent producers nothing unacknowledged may be stored:
	// each in-flight batch was retried and acknowledged.
	for _, c := range producers {
		if !c.idem {
			continue
		}
		n := uint64(0)
		for _, rec := range sent[c.build] {
			if rec.acked {
				n += uint64(len(rec.entries))
			}
		}
		if c.pending == nil && n != c.next {
			t.Fatalf("cycle %d: %s: acked %d entries, producer at %d", cycle, c.build, n, c.next)
		}
	}
}

func at2(stored [][]byte, o uint64) []byte {
	if o < uint64(len(stored)) {
		return stored[o]
	}
	return []byte("(past the end)")
}
