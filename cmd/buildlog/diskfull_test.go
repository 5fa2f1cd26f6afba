package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"buildlog/internal/testkit"
)

// A real full disk: the data directory is a tiny tmpfs (where the test may
// mount one, as root usually can). Appends fill it until the store fails;
// those answer 503 and acknowledge nothing unstored; reads keep working;
// once the filesystem grows, appends succeed again without a restart.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a filesystem")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s); the store wrapper test in internal/httpapi covers write failures", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })

	addr := testkit.FreeAddr(t)
	p := startServe(t, addr, []string{"BUILDLOG_ADMIN_KEY=k"}, "--addr", addr, "--data", dir, "--rate-per-key", "0")
	if code, body := p.do("POST", "/v1/templates/t/builds", "k", `{"build_id":"tb_full"}`); code != 201 {
		t.Fatalf("%d %s", code, body)
	}
	big := strings.Repeat("f", 8000)
	var acked uint64
	full := 0
	for i := 0; i < 2000 && full < 3; i++ {
		body := fmt.Sprintf(`{"entries":[{"message":"%d %s"},{"message":"%d %s"}],"first_offset":%d}`, i, big, i, big, acked)
		code, reply := p.do("POST", "/v1/templates/builds/tb_full/logs", "k", body)
		switch code {
		case 200:
			if got := uint64(mustJSON(t, reply)["first_offset"].(float64)); got != acked {
				t.Fatalf("append %d acknowledged at %d, want %d", i, got, acked)
			}
			acked += 2
		case 503:
			full++
			if !strings.Contains(string(reply), `"unavailable"`) {
				t.Fatalf("503 body %s", reply)
			}
		default:
			t.Fatalf("append %d: %d %s", i, code, reply)
		}
	}
	if full == 0 {
		t.Fatalf("3 MiB never filled after %d entries", acked)
	}
	t.Logf("disk full after %d acknowledged entries", acked)

	// Reads go on, and show exactly what was acknowledged.
	if code, body := p.do("GET", "/v1/templates/builds/tb_full", "k", ""); code != 200 || mustJSON(t, body)["next_offset"] != float64(acked) {
		t.Fatalf("build while full: %d %s", code, body)
	}
	checkLog := func(want uint64) {
		t.Helper()
		code, body := p.do("GET", "/v1/templates/builds/tb_full/logs?limit=10000", "k", "", "Accept", "application/json")
		var page struct {
			Entries []struct {
				Offset  uint64
				Message string
			}
		}
		if code != 200 || json.Unmarshal(body, &page) != nil || uint64(len(page.Entries)) != want {
			t.Fatalf("log: %d, %d entries, want %d", code, len(page.Entries), want)
		}
		for i, e := range page.Entries {
			if e.Offset != uint64(i) || !strings.HasPrefix(e.Message, fmt.Sprint(i/2, " ")) {
				t.Fatalf("entry %d: offset %d message %.20q", i, e.Offset, e.Message)
			}
		}
	}
	checkLog(acked)

	// Room again, no restart: the producer goes on where it was.
	if out, err := exec.Command("mount", "-o", "remount,size=64m", dir).CombinedOutput(); err != nil {
		t.Fatalf("growing the tmpfs: %v %s", err, out)
	}
	body := fmt.Sprintf(`{"entries":[{"message":"%d after"},{"message":"%d after"}],"first_offset":%d}`, acked/2, acked/2, acked)
	if code, reply := p.do("POST", "/v1/templates/builds/tb_full/logs", "k", body); code != 200 {
		t.Fatalf("append after the disk has room again: %d %s\n%s", code, reply, p.out)
	}
	checkLog(acked + 2)
	if code, body := p.do("POST", "/v1/templates/builds/tb_full/finish", "k", `{"status":"ready"}`); code != 200 {
		t.Fatalf("finish: %d %s", code, body)
	}
}
