package httpapi_test

import (
	"context"
	"testing"
	"time"
)

// The append path serves keys and builds from memory (see appendCache);
// what can change must still be seen at once.

func TestAppendAfterRevocation(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(map[string]any{"team": "acme"})
	key, keyID := s.newKey("acme", "write")
	path := "/v1/templates/builds/" + id + "/logs"
	s.want(s.do("POST", path, key, msgs(0, 2)), 200) // the key and build are now in memory
	s.want(s.do("DELETE", "/v1/keys/"+keyID, adminKey, nil), 204)
	s.want(s.do("POST", path, key, msgs(2, 2)), 401)
	if got := s.nextOffset(id); got != 2 {
		t.Errorf("next offset %d after an append with a revoked key, want 2", got)
	}
}

func TestAppendAfterFinish(t *testing.T) {
	s := newServer(t)
	id := s.newBuild(nil)
	s.append(id, msgs(0, 1))
	s.want(s.finish(id, "ready"), 200)
	r := s.want(s.do("POST", "/v1/templates/builds/"+id+"/logs", adminKey, msgs(1, 1)), 409)
	if msg := r.errMessage(t); msg == "" {
		t.Errorf("409 without a message: %s", r)
	}
}

// A build deleted by retention whose id another team then uses is another
// build: the first team's key, which the append path remembers with the
// old build, must not reach the new one.
func TestAppendAfterIDReuse(t *testing.T) {
	s := newServer(t)
	const id = "tb_reused"
	s.newBuild(map[string]any{"build_id": id, "team": "acme"})
	acme, _ := s.newKey("acme", "write")
	other, _ := s.newKey("other", "read", "write")
	path := "/v1/templates/builds/" + id + "/logs"
	s.want(s.do("POST", path, acme, msgs(0, 1)), 200)
	s.want(s.finish(id, "ready"), 200)
	time.Sleep(time.Millisecond) // finished strictly before the cut-off
	if n, err := s.store.DeleteFinished(context.Background(), time.Now(), 0); err != nil || n != 1 {
		t.Fatalf("DeleteFinished = %d, %v; want 1", n, err)
	}
	s.newBuild(map[string]any{"build_id": id, "team": "other"})
	s.want(s.do("POST", path, acme, msgs(1, 1)), 404)
	s.want(s.do("POST", path, other, msgs(0, 1)), 200)
	b, err := s.store.Build(context.Background(), id)
	if err != nil || b.Team != "other" || b.NextOffset != 1 {
		t.Fatalf("reused id's build: %+v, %v; want team other with one entry", b, err)
	}
	chunks, err := s.store.ReadLog(context.Background(), id, 0, 1<<20)
	if err != nil || len(chunks) != 1 {
		t.Fatalf("ReadLog: %d chunks, %v", len(chunks), err)
	}
}
