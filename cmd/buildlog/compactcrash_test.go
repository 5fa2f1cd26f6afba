package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"buildlog"
	"buildlog/internal/sqlite"
	"buildlog/internal/sse"
	"buildlog/internal/testkit"
	"buildlog/internal/wire"
)

// compactProbe looks at the store from outside the server, to see how far
// its compactor has come.
type compactProbe interface {
	// compacted counts the builds of ids whose logs are all segments.
	compacted(t *testing.T, ids []string) int
	// rawChunks counts the chunks of finished builds not yet compacted.
	rawChunks(t *testing.T) int
}

type sqliteProbe struct{ db *sql.DB }

func (p sqliteProbe) compacted(t *testing.T, ids []string) int {
	t.Helper()
	n := 0
	for _, id := range ids {
		var c int
		if err := p.db.QueryRow(`SELECT compacted FROM builds WHERE id = ?`, id).Scan(&c); err != nil {
			t.Fatalf("probe: %v", err)
		}
		n += c
	}
	return n
}

func (p sqliteProbe) rawChunks(t *testing.T) int {
	t.Helper()
	var n int
	if err := p.db.QueryRow(`SELECT count(*) FROM chunks c JOIN builds b ON b.id = c.build_id
		WHERE c.codec = 0 AND b.finished_at IS NOT NULL`).Scan(&n); err != nil {
		t.Fatalf("probe: %v", err)
	}
	return n
}

type pgProbe struct{ conn *pgx.Conn }

func (p pgProbe) compacted(t *testing.T, ids []string) int {
	t.Helper()
	var n int
	if err := p.conn.QueryRow(context.Background(), `SELECT count(*) FROM builds WHERE compacted AND id = ANY($1)`, ids).Scan(&n); err != nil {
		t.Fatalf("probe: %v", err)
	}
	return n
}

func (p pgProbe) rawChunks(t *testing.T) int {
	t.Helper()
	var n int
	if err := p.conn.QueryRow(context.Background(), `SELECT count(*) FROM chunks c JOIN builds b ON b.id = c.build_id
		WHERE c.codec = 0 AND b.finished_at IS NOT NULL`).Scan(&n); err != nil {
		t.Fatalf("probe: %v", err)
	}
	return n
}

// crashBuild is a build of the compaction crash test and what it holds.
type crashBuild struct {
	id, version string
	lines       [][]byte // dialect A data of each appended entry, by offset
	messages    []string
	// As first read after the build finished, compared byte for byte
	// after every restart: the events of dialect A (every field but the
	// reconnection delay, which is jittered), every frame of dialect B,
	// every line of dialect C.
	a, b []byte
	c    []string
}

// TestCompactionCrash kills the server with SIGKILL while its compactor
// rewrites finished builds (several MiB of small batches each) into
// segments: four waves of builds, each killed at random moments, then
// restarted, until the wave is compacted. After each wave's kills every
// build, compacted or not, reads back complete and byte for byte the same in dialects A, B
// and C (while the restarted server's compactor goes on), and at the end
// compaction completes: no finished build keeps a raw chunk.
func TestCompactionCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 during compaction")
	}
	t.Run("sqlite", func(t *testing.T) {
		data := t.TempDir()
		compactionCrash(t, []string{"--data", data}, func(t *testing.T) compactProbe {
			db, err := sql.Open("sqlite", "file:"+filepath.Join(data, sqlite.FileName)+"?mode=ro&_pragma=busy_timeout(10000)")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return sqliteProbe{db}
		})
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := freshDatabase(t)
		compactionCrash(t, []string{"--store", dsn}, func(t *testing.T) compactProbe {
			conn, err := pgx.Connect(context.Background(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close(context.Background()) })
			return pgProbe{conn}
		})
	})
}

func compactionCrash(t *testing.T, storeArgs []string, probe func(*testing.T) compactProbe) {
	const (
		waves         = 4
		buildsPerWave = 3
		entries       = 5000 // about 2.5 MB of lines a build: three segments
		batch         = 250
	)
	env := []string{"BUILDLOG_ADMIN_KEY=k"}
	// A fresh address for every start: nothing here needs the same one,
	// and a port freed by a kill may be taken by another package's test
	// server before the restart binds it.
	start := func() *proc {
		addr := testkit.FreeAddr(t)
		return startServe(t, addr, env, append([]string{"--addr", addr, "--rate-per-key", "0"}, storeArgs...)...)
	}
	rng := rand.New(rand.NewPCG(7, 13))
	var all []*crashBuild
	var (
		pr          compactProbe
		p           *proc
		hits, kills int
	)
	for wave := 0; ; wave++ {
		p = start()
		if pr == nil {
			pr = probe(t)
		}
		// Read back everything, while the compactor finishes what the
		// kill interrupted.
		for _, b := range all {
			verifyCompacted(t, p, b, fmt.Sprintf("restart %d", wave))
		}
		if wave == waves {
			break
		}
		var ids []string
		for i := range buildsPerWave {
			b := &crashBuild{id: fmt.Sprintf("tb_cc%d_%d", wave, i), version: fmt.Sprintf("1.%d.%d", wave, i)}
			if code, body := p.do("POST", "/v1/templates/tmpl_cc/builds", "k",
				fmt.Sprintf(`{"build_id":%q,"namespace":"cc","name":"img","version":%q}`, b.id, b.version)); code != 201 {
				t.Fatalf("create: %d %s", code, body)
			}
			appendCrashBuild(t, p, b, rng, entries, batch)
			all, ids = append(all, b), append(ids, b.id)
		}
		for i, b := range all[len(all)-buildsPerWave:] {
			status := []string{"ready", "failed", "cancelled"}[i%3]
			if code, body := p.do("POST", "/v1/templates/builds/"+b.id+"/finish", "k", `{"status":"`+status+`"}`); code != 200 {
				t.Fatalf("finish %s: %d %s", b.id, code, body)
			}
		}
		// Kill the server at random moments while its compactor works
		// through the wave, restarting it each time (a restarted
		// compactor goes on at once), until the wave is compacted.
		for kill := 0; ; kill++ {
			// Later kills wait longer, so that each wave ends.
			time.Sleep(time.Duration(rng.IntN(150*(kill+1))) * time.Millisecond)
			p.kill()
			n := pr.compacted(t, ids)
			if n > 0 && n < len(ids) {
				hits++
			}
			kills++
			if n == len(ids) {
				break
			}
			if kill == 20 {
				t.Fatalf("wave %d: %d of %d builds compacted after 20 kills", wave, n, len(ids))
			}
			p = start()
		}
	}
	if hits == 0 {
		t.Fatalf("no kill came while a wave was part compacted")
	}
	// Compaction completes after the kills.
	deadline := time.Now().Add(90 * time.Second)
	for pr.rawChunks(t) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d raw chunks of finished builds left 90 s after the last restart", pr.rawChunks(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
	var ids []string
	for _, b := range all {
		ids = append(ids, b.id)
	}
	if n := pr.compacted(t, ids); n != len(ids) {
		t.Fatalf("%d of %d builds compacted", n, len(ids))
	}
	for _, b := range all {
		verifyCompacted(t, p, b, "after compaction")
	}
	t.Logf("%d kills, %d of them while a wave of %d builds was part compacted", kills, hits, buildsPerWave)
}

// appendCrashBuild appends entries lines of build-tool-like text in
// batches, remembering the line each entry must read back as.
func appendCrashBuild(t *testing.T, p *proc, b *crashBuild, rng *rand.Rand, entries, batch int) {
	t.Helper()
	words := []string{"gcc", "-O2", "-Wall", "-c", "-o", "obj/", "src/", "include", "warning:", "unused", "variable",
		"ld", "-lz", "-lpthread", "make[2]:", "Entering", "directory", "CC", "LINK", "ü", "\"quoted\"", "tab\there", "<&>"}
	for first := 0; first < entries; first += batch {
		var es []buildlog.Entry
		for j := range min(batch, entries-first) {
			off := first + j
			var sb strings.Builder
			fmt.Fprintf(&sb, "%s %06d", b.id, off)
			for range 20 + rng.IntN(60) {
				sb.WriteByte(' ')
				sb.WriteString(words[rng.IntN(len(words))])
				if rng.IntN(4) == 0 {
					fmt.Fprintf(&sb, "%d", rng.IntN(100000))
				}
			}
			es = append(es, buildlog.Entry{
				Timestamp: fmt.Sprintf("2026-12-03T10:%02d:%02d.%06dZ", off/60000%60, off/1000%60, off%1000*1000),
				Kind:      buildlog.KindMessage,
				Level:     []buildlog.Level{buildlog.LevelInfo, buildlog.LevelDebug, buildlog.LevelWarn}[off%3],
				Message:   sb.String(),
			})
		}
		fo := uint64(first)
		got, code, err := postBatch(p.URL+"/v1/templates/builds/"+b.id+"/logs", es, &fo)
		if err != nil || code != 200 || got != fo {
			t.Fatalf("append to %s at %d: %d %v (first_offset %d)", b.id, first, code, err, got)
		}
		for j := range es {
			e := es[j]
			e.BuildID, e.TemplateID, e.Offset = b.id, "tmpl_cc", uint64(first+j)
			b.lines = append(b.lines, wire.AppendEntry(nil, &e))
			b.messages = append(b.messages, e.Message)
		}
	}
}

// verifyCompacted reads b in every dialect: dialect A's lines must be the
// ones appended, byte for byte, then the terminal entry; every dialect's
// whole output must be what its first read was.
func verifyCompacted(t *testing.T, p *proc, b *crashBuild, when string) {
	t.Helper()
	evs := events(t, getAll(t, p.URL+"/v1/templates/builds/"+b.id+"/logs", ""))
	a := eventBytes(evs)
	if len(evs) != len(b.lines)+1 {
		t.Fatalf("%s: %s: dialect A has %d entries, want %d and the terminal one", when, b.id, len(evs), len(b.lines))
	}
	for i, ev := range evs[:len(b.lines)] {
		if ev.ID != fmt.Sprint(i) || !bytes.Equal(ev.Data, b.lines[i]) {
			t.Fatalf("%s: %s: dialect A event %d (id %s):\n got %s\nwant %s", when, b.id, i, ev.ID, ev.Data, b.lines[i])
		}
	}
	var term buildlog.Entry
	if err := json.Unmarshal(evs[len(evs)-1].Data, &term); err != nil || term.Kind == buildlog.KindMessage {
		t.Fatalf("%s: %s: last entry is not the terminal one: %s", when, b.id, evs[len(evs)-1].Data)
	}
	frames := events(t, getAll(t, p.URL+"/templates/cc/img/"+b.version+"/build/events", ""))
	bStream := eventBytes(frames)
	if len(frames) < len(b.messages) {
		t.Fatalf("%s: %s: dialect B has %d frames for %d entries", when, b.id, len(frames), len(b.messages))
	}
	for i, m := range b.messages {
		var f struct{ Line string }
		if err := json.Unmarshal(frames[i].Data, &f); err != nil || f.Line != m {
			t.Fatalf("%s: %s: dialect B frame %d is %s, want line %q", when, b.id, i, frames[i].Data, m)
		}
	}
	c := pollAll(t, p.URL+"/v1/builds/"+b.id+"/logs")
	if len(c) != len(b.messages)+1 {
		t.Fatalf("%s: %s: dialect C has %d lines, want %d", when, b.id, len(c), len(b.messages)+1)
	}
	for i, m := range b.messages {
		if !strings.HasSuffix(c[i], " "+m) {
			t.Fatalf("%s: %s: dialect C line %d is %q, want it to end with %q", when, b.id, i, c[i], m)
		}
	}
	// The kept bytes the build reports are its log's, compacted or not.
	var kept uint64
	for _, ev := range evs {
		kept += uint64(len(ev.Data)) + 1
	}
	code, body := p.do("GET", "/v1/templates/builds/"+b.id, "k", "")
	if code != 200 {
		t.Fatalf("%s: build %s: %d %s", when, b.id, code, body)
	}
	if got := uint64(mustJSON(t, body)["kept_bytes"].(float64)); got != kept {
		t.Fatalf("%s: %s: kept_bytes %d, the log holds %d", when, b.id, got, kept)
	}
	if b.a == nil {
		b.a, b.b, b.c = a, bStream, c
		return
	}
	if !bytes.Equal(a, b.a) || !bytes.Equal(bStream, b.b) || !slices.Equal(c, b.c) {
		t.Fatalf("%s: %s: a read differs from the first (A %v, B %v, C %v)", when, b.id,
			bytes.Equal(a, b.a), bytes.Equal(bStream, b.b), slices.Equal(c, b.c))
	}
}

// getAll returns a response body that ends (a finished build's stream).
func getAll(t *testing.T, u, accept string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	req.Header.Set("Authorization", "Bearer k")
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", u, res.StatusCode, err)
	}
	return body
}

// eventBytes is events' ids, types and data, each field on a line of
// its own.
func eventBytes(evs []sse.Event) []byte {
	var out []byte
	for _, ev := range evs {
		out = fmt.Appendf(out, "%s\n%s\n%s\n", ev.ID, ev.Type, ev.Data)
	}
	return out
}

// pollAll reads dialect C from the head, page after page, until a page
// has no nextToken.
func pollAll(t *testing.T, u string) []string {
	t.Helper()
	var out []string
	q := url.Values{"startFromHead": {"true"}, "limit": {"3000"}}
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("%s: over 1000 pages", u)
		}
		var page struct {
			Logs      []string `json:"logs"`
			NextToken *string  `json:"nextToken"`
		}
		if err := json.Unmarshal(getAll(t, u+"?"+q.Encode(), ""), &page); err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		out = append(out, page.Logs...)
		if page.NextToken == nil {
			return out
		}
		q = url.Values{"nextToken": {*page.NextToken}, "limit": {"3000"}}
	}
}
