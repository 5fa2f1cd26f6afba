package postgres_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/httpapi"
	"buildlog/internal/live"
	"buildlog/internal/postgres"
	"buildlog/internal/sse"
)

// countingStore is the real PostgreSQL store with the calls followers make
// counted. Embedding keeps it a CommitWatcher, so the API treats it as the
// shared store it is.
type countingStore struct {
	*postgres.Store
	reads, builds atomic.Int64
}

func (s *countingStore) ReadLog(ctx context.Context, id string, from uint64, max int) ([]buildlog.Chunk, error) {
	s.reads.Add(1)
	return s.Store.ReadLog(ctx, id, from, max)
}

func (s *countingStore) Build(ctx context.Context, id string) (*buildlog.Build, error) {
	s.builds.Add(1)
	return s.Store.Build(ctx, id)
}

// On the committing server each commit wakes the followers twice (its own
// notice, then the database's); followers woken together share one store
// read and one status check, so the store's load does not grow with the
// number of followers.
func TestFollowersShareStoreCalls(t *testing.T) {
	dsn := postgres.FreshSchema(t)
	ctx := context.Background()
	pg, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	st := &countingStore{Store: pg}
	secret, err := pg.Secret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hub := live.New(0)
	api := httpapi.New(httpapi.Config{Store: st, Hub: hub, AdminKey: adminKey, Secret: secret, Keepalive: time.Hour})
	bg, stop := context.WithCancel(ctx)
	watched := make(chan struct{})
	listening := make(chan struct{})
	var once sync.Once
	go func() {
		defer close(watched)
		pg.WatchCommits(bg, func(id string) {
			hub.Notify(id)
			if id == "" {
				once.Do(func() { close(listening) })
			}
		})
	}()
	ts := httptest.NewServer(api)
	n := &node{t: t, URL: ts.URL, store: pg, hub: hub}
	t.Cleanup(func() {
		api.Drain()
		ts.Close()
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := api.Wait(wctx); err != nil {
			t.Errorf("streams still open 10s after Drain: %v", err)
		}
		wcancel()
		stop()
		<-watched
		pg.Close()
	})
	<-listening

	const followers, commits = 40, 15
	const id = "tb_fanout_share"
	n.newBuild(id)
	n.must(200, "POST", "/v1/templates/builds/"+id+"/logs", map[string]any{"entries": lines(0, 1), "first_offset": 0})

	var got atomic.Int64 // entries received, over all followers
	var wg sync.WaitGroup
	errs := make(chan error, followers)
	for range followers {
		req, _ := http.NewRequest("GET", ts.URL+"/v1/templates/builds/"+id+"/logs?follow=true", nil)
		req.Header.Set("Authorization", "Bearer "+adminKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != 200 {
			t.Fatalf("follow: %d", res.StatusCode)
		}
		wg.Go(func() {
			defer res.Body.Close()
			rd := sse.NewReader(res.Body)
			for {
				ev, err := rd.Next()
				if err != nil {
					errs <- err
					return
				}
				got.Add(1)
				if ev.ID == "16" { // the terminal entry
					return
				}
			}
		})
	}
	until := func(want int64) {
		deadline := time.Now().Add(30 * time.Second)
		for got.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("followers received %d entries, want %d", got.Load(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	until(followers)
	time.Sleep(200 * time.Millisecond) // the first entry's notices have come and gone
	reads0, builds0 := st.reads.Load(), st.builds.Load()
	for c := 1; c <= commits; c++ {
		n.must(200, "POST", "/v1/templates/builds/"+id+"/logs", map[string]any{"entries": lines(c, 1), "first_offset": c})
		until(int64(followers * (c + 1)))
		time.Sleep(20 * time.Millisecond) // let the database's notice of it arrive before the next
	}
	reads, builds := st.reads.Load()-reads0, st.builds.Load()-builds0
	n.must(200, "POST", "/v1/templates/builds/"+id+"/finish", map[string]any{"status": "ready"})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Unshared, each commit costs every follower a status check on its
	// second wake-up (and a read on each): followers × commits. Shared,
	// a few per commit, however many follow: followers holding different
	// wake channels (one read before the second notice, one after) are
	// separate groups.
	t.Logf("%d commits to %d followers: %d store reads, %d status checks", commits, followers, reads, builds)
	if limit := int64(6 * commits); reads > limit || builds > limit {
		t.Fatalf("%d commits to %d followers made %d store reads and %d status checks, want at most %d each",
			commits, followers, reads, builds, limit)
	}
}
