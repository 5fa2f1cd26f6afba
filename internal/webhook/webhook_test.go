package webhook_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/metrics"
	"buildlog/internal/postgres"
	"buildlog/internal/sweep"
	"buildlog/internal/testkit"
	"buildlog/internal/webhook"
)

// A finish reaches the receiver within a second, signed with the hook's
// secret; the first append's build.started comes too.
func TestSignedDelivery(t *testing.T) {
	eachStore(t, func(t *testing.T, st buildlog.Store) {
		srv := newServer(t, st, true)
		rc := testkit.NewReceiver(t, nil)
		startDeliverer(t, st, func(d *webhook.Deliverer) { d.Backoff = 0 }) // the defaults, as serve runs it
		h := srv.hook(adminKey, "", rc.URL+"/hook")
		if !slices.Equal(h.Events, buildlog.EventTypes) || h.Team != "default" || !strings.HasPrefix(h.Secret, "whsec_") {
			t.Fatalf("created hook %+v: want every event, team default, a whsec_ secret", h)
		}

		srv.want(201, "POST", "/v1/templates/tmpl/builds", adminKey, map[string]any{"build_id": "b1"}, nil)
		srv.want(200, "POST", "/v1/templates/builds/b1/logs", adminKey, []byte(`[{"message":"hello"}]`), nil)
		started := rc.Next(t)
		srv.want(200, "POST", "/v1/templates/builds/b1/finish", adminKey, map[string]any{"status": "ready"}, nil)
		finishedAt := time.Now()
		finished := rc.Next(t)
		if d := finished.At.Sub(finishedAt); d > time.Second {
			t.Errorf("build.finished arrived %v after the finish was answered, want within 1 s", d)
		}

		for _, c := range []struct {
			r      testkit.Delivery
			typ    string
			status buildlog.Status
		}{{started, buildlog.EventBuildStarted, buildlog.StatusBuilding}, {finished, buildlog.EventBuildFinished, buildlog.StatusReady}} {
			testkit.Verify(t, h.Secret, c.r)
			e := c.r.Event()
			if e.Type != c.typ || e.ID == "" || e.Build == nil || e.Build.ID != "b1" || e.Build.Status != c.status {
				t.Errorf("%s body: %s", c.typ, c.r.Body)
			}
			if got := c.r.Header.Get("Buildlog-Event"); got != c.typ {
				t.Errorf("Buildlog-Event = %q, want %q", got, c.typ)
			}
			if got := c.r.Header.Get("Buildlog-Delivery"); got != e.ID {
				t.Errorf("Buildlog-Delivery = %q, want the event id %q", got, e.ID)
			}
			if got := c.r.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q", got)
			}
			if e.CreatedAt.IsZero() || time.Since(e.CreatedAt) > time.Minute {
				t.Errorf("created_at = %v", e.CreatedAt)
			}
		}
		if e := finished.Event(); e.Build.FinishedAt == nil || e.Build.NextOffset != 2 || e.Build.EntryCount != 2 {
			t.Errorf("build.finished's build: %s", finished.Body)
		}
		// Tampering with the body breaks the signature.
		forged := finished
		forged.Body = []byte(strings.Replace(string(finished.Body), `"ready"`, `"failed"`, 1))
		if testkit.CheckSignature(h.Secret, forged) == nil {
			t.Error("a forged body verified")
		}

		testkit.Eventually(t, 20*time.Second, "two delivered records", func() bool { return len(srv.deliveries(adminKey, h.ID)) == 2 })
		ds := srv.deliveries(adminKey, h.ID)
		for _, d := range ds {
			if d.Result != "delivered" || d.StatusCode != 204 || d.Attempt != 1 || d.Error != "" || d.BuildID != "b1" {
				t.Errorf("record %+v: want delivered with 204 on attempt 1", d)
			}
		}
		if ds[0].Event != buildlog.EventBuildFinished || ds[0].ID != finished.Event().ID || ds[1].ID != started.Event().ID {
			t.Errorf("records %+v: want build.finished then build.started (newest first), by event id", ds)
		}
	})
}

// A receiver answering 500 twice then 200 gets three attempts at one event
// id, each freshly signed; the records tell the story, newest first.
func TestRetrySameEventID(t *testing.T) {
	eachStore(t, func(t *testing.T, st buildlog.Store) {
		srv := newServer(t, st, true)
		rc := testkit.NewReceiver(t, func(n int, _ *http.Request) int {
			if n <= 2 {
				return 500
			}
			return 200
		})
		startDeliverer(t, st)
		h := srv.hook(adminKey, "", rc.URL, buildlog.EventBuildFinished)
		srv.build(adminKey, "r1", buildlog.StatusFailed)
		var ids []string
		for range 3 {
			r := rc.Next(t)
			testkit.Verify(t, h.Secret, r)
			ids = append(ids, r.Header.Get("Buildlog-Delivery"))
		}
		if ids[0] == "" || ids[1] != ids[0] || ids[2] != ids[0] {
			t.Errorf("event ids of the three attempts: %q, want one id", ids)
		}
		testkit.Eventually(t, 20*time.Second, "three records", func() bool { return len(srv.deliveries(adminKey, h.ID)) == 3 })
		ds := srv.deliveries(adminKey, h.ID)
		for i, want := range []struct {
			attempt, code int
			result        string
		}{{3, 200, "delivered"}, {2, 500, "retrying"}, {1, 500, "retrying"}} {
			d := ds[i]
			if d.Attempt != want.attempt || d.StatusCode != want.code || d.Result != want.result || d.ID != ids[0] {
				t.Errorf("record %d: %+v, want attempt %d, %d, %s", i, d, want.attempt, want.code, want.result)
			}
		}
		if ds[1].Error != "HTTP 500" {
			t.Errorf("a 500's error: %q", ds[1].Error)
		}
		time.Sleep(100 * time.Millisecond) // ten backoffs: a delivered event is not sent again
		if n := rc.Count(); n != 3 {
			t.Errorf("receiver got %d requests, want 3", n)
		}
	})
}

// A receiver that is down when the build finishes gets the event once it
// is up.
func TestReceiverDownThenUp(t *testing.T) {
	eachStore(t, func(t *testing.T, st buildlog.Store) {
		srv := newServer(t, st, true)
		addr := testkit.FreeAddr(t)
		startDeliverer(t, st)
		h := srv.hook(adminKey, "", "http://"+addr+"/in", buildlog.EventBuildFinished)
		srv.build(adminKey, "d1", buildlog.StatusReady)
		testkit.Eventually(t, 20*time.Second, "a failed attempt", func() bool {
			ds := srv.deliveries(adminKey, h.ID)
			return len(ds) > 0 && ds[len(ds)-1].Result == "retrying"
		})
		failed := srv.deliveries(adminKey, h.ID)
		if d := failed[len(failed)-1]; d.StatusCode != 0 || !strings.Contains(d.Error, "refused") {
			t.Errorf("attempt at a closed port: %+v, want no status code and a connection error", d)
		}

		rc := testkit.NewReceiverOn(t, addr, nil)
		r := rc.Next(t)
		testkit.Verify(t, h.Secret, r)
		if e := r.Event(); e.Type != buildlog.EventBuildFinished || e.Build.ID != "d1" || e.ID != failed[0].ID {
			t.Errorf("after the receiver came up: %s, want d1's build.finished %s", r.Body, failed[0].ID)
		}
	})
}

// A hook receives its own team's events only, and is managed by its own
// team's keys only.
func TestTeams(t *testing.T) {
	eachStore(t, func(t *testing.T, st buildlog.Store) {
		srv := newServer(t, st, true)
		acmeKey, otherKey := srv.key("acme", "read", "write"), srv.key("other", "read", "write")
		readKey := srv.key("acme", "read")
		acme, other := testkit.NewReceiver(t, nil), testkit.NewReceiver(t, nil)
		startDeliverer(t, st)
		ha := srv.hook(adminKey, "acme", acme.URL, buildlog.EventBuildFinished)
		ho := srv.hook(otherKey, "", other.URL, buildlog.EventBuildFinished)
		if ho.Team != "other" {
			t.Fatalf("a write key's hook belongs to %q, want its team other", ho.Team)
		}
		srv.build(acmeKey, "a1", buildlog.StatusReady)
		srv.build(acmeKey, "a2", buildlog.StatusFailed)
		srv.build(otherKey, "o1", buildlog.StatusReady)

		got := map[string][]string{}
		for name, rc := range map[string]*testkit.Receiver{"acme": acme, "other": other} {
			n := 2
			if name == "other" {
				n = 1
			}
			for range n {
				got[name] = append(got[name], rc.Next(t).Event().Build.ID)
			}
			slices.Sort(got[name])
		}
		if !slices.Equal(got["acme"], []string{"a1", "a2"}) || !slices.Equal(got["other"], []string{"o1"}) {
			t.Errorf("deliveries: acme's hook got %q, other's %q", got["acme"], got["other"])
		}
		// Events are matched to hooks when they happen: with nothing
		// pending, nothing else can arrive.
		testkit.Eventually(t, 20*time.Second, "an empty outbox", func() bool {
			q, err := st.PendingDeliveries(context.Background())
			return err == nil && q.Pending == 0
		})
		if acme.Count() != 2 || other.Count() != 1 {
			t.Errorf("requests: acme %d, other %d; want 2 and 1", acme.Count(), other.Count())
		}

		var list struct{ Webhooks []createdHook }
		srv.want(200, "GET", "/v1/webhooks", otherKey, nil, &list)
		if len(list.Webhooks) != 1 || list.Webhooks[0].ID != ho.ID || list.Webhooks[0].Secret != "" {
			t.Errorf("other's listing: %+v, want only its hook, without secret", list.Webhooks)
		}
		srv.want(200, "GET", "/v1/webhooks", adminKey, nil, &list)
		if len(list.Webhooks) != 2 {
			t.Errorf("admin's listing: %d hooks, want 2", len(list.Webhooks))
		}
		for _, c := range []struct {
			method, path, key string
			code              int
		}{
			{"DELETE", "/v1/webhooks/" + ha.ID, otherKey, 404},
			{"GET", "/v1/webhooks/" + ha.ID + "/deliveries", otherKey, 404},
			{"GET", "/v1/webhooks", readKey, 403},
			{"GET", "/v1/webhooks/" + ha.ID + "/deliveries", readKey, 403},
			{"DELETE", "/v1/webhooks/" + ha.ID, readKey, 403},
			{"GET", "/v1/webhooks", "", 401},
			{"DELETE", "/v1/webhooks/wh_nope", acmeKey, 404},
		} {
			if code, body := srv.do(c.method, c.path, c.key, nil); code != c.code {
				t.Errorf("%s %s: %d %s, want %d", c.method, c.path, code, body, c.code)
			}
		}
		if code, _ := srv.do("POST", "/v1/webhooks", acmeKey, map[string]any{"url": acme.URL, "team": "other"}); code != 403 {
			t.Errorf("a write key naming a team: %d, want 403", code)
		}
		srv.want(204, "DELETE", "/v1/webhooks/"+ha.ID, acmeKey, nil, nil)
	})
}

// A deleted hook gets nothing more, not even the retries of an event it
// was failing to take.
func TestDeletedHook(t *testing.T) {
	eachStore(t, func(t *testing.T, st buildlog.Store) {
		srv := newServer(t, st, true)
		failing := testkit.NewReceiver(t, func(int, *http.Request) int { return 500 })
		ok := testkit.NewReceiver(t, nil)
		// Retries wait ≥ 150 ms, so the hook is deleted between attempts.
		startDeliverer(t, st, func(d *webhook.Deliverer) { d.Backoff = 200 * time.Millisecond })
		hx := srv.hook(adminKey, "", failing.URL, buildlog.EventBuildFinished)
		srv.hook(adminKey, "", ok.URL, buildlog.EventBuildFinished)

		srv.build(adminKey, "x1", buildlog.StatusReady)
		ok.Next(t)
		failing.Next(t)
		testkit.Eventually(t, 20*time.Second, "the failed attempt recorded", func() bool { return len(srv.deliveries(adminKey, hx.ID)) == 1 })
		srv.want(204, "DELETE", "/v1/webhooks/"+hx.ID, adminKey, nil, nil)
		if code, _ := srv.do("GET", "/v1/webhooks/"+hx.ID+"/deliveries", adminKey, nil); code != 404 {
			t.Errorf("deliveries of a deleted hook: %d, want 404", code)
		}

		srv.build(adminKey, "x2", buildlog.StatusReady)
		if e := ok.Next(t).Event(); e.Build.ID != "x2" {
			t.Errorf("the remaining hook got %s, want x2", e.Build.ID)
		}
		time.Sleep(500 * time.Millisecond) // past two more retries of x1, had they been made
		if n := failing.Count(); n != 1 {
			t.Errorf("deleted hook's receiver got %d requests, want the 1 before deletion", n)
		}
	})
}

// Private targets are refused when a hook is made, and again at delivery
// (the address a name resolves to may change after creation).
func TestPrivateTargets(t *testing.T) {
	eachStore(t, func(t *testing.T, st buildlog.Store) {
		strict := newServer(t, st, false)
		for _, u := range []string{
			"http://127.0.0.1:9/h", "http://localhost/h", "http://api.localhost/h", "https://10.1.2.3/h",
			"http://172.16.0.1/h", "http://192.168.1.1:8080/h", "http://169.254.169.254/latest/meta-data",
			"http://[::1]/h", "http://[fe80::1]/h", "http://0.0.0.0/h", "http://100.64.0.1/h",
			"http://[::ffff:127.0.0.1]/h", "http://[fd00::1]/h", "http://224.0.0.1/h",
		} {
			code, body := strict.do("POST", "/v1/webhooks", adminKey, map[string]any{"url": u})
			if code != 400 || !strings.Contains(string(body), "--webhook-allow-private") {
				t.Errorf("POST /v1/webhooks %s: %d %s, want 400 naming --webhook-allow-private", u, code, body)
			}
		}
		// A public address needs no lookup and is taken.
		strict.hook(adminKey, "", "https://93.184.215.14/h")

		// At delivery: made on a server that allows it, delivered by one
		// that does not.
		srv := newServer(t, st, true)
		rc := testkit.NewReceiver(t, nil)
		startDeliverer(t, st, func(d *webhook.Deliverer) { d.AllowPrivate = false })
		h := srv.hook(adminKey, "", rc.URL, buildlog.EventBuildFinished)
		srv.build(adminKey, "p1", buildlog.StatusReady)
		testkit.Eventually(t, 20*time.Second, "a refused attempt", func() bool { return len(srv.deliveries(adminKey, h.ID)) > 0 })
		d := srv.deliveries(adminKey, h.ID)[0]
		if d.Result != "retrying" || d.StatusCode != 0 || !strings.Contains(d.Error, "refused: 127.0.0.1 is a loopback") {
			t.Errorf("delivery to loopback without the flag: %+v", d)
		}
		if rc.Count() != 0 {
			t.Errorf("the receiver got %d requests, want none", rc.Count())
		}
	})
}

// Bad hook requests are 400 (403 for a team a key may not name) and store
// nothing.
func TestCreateErrors(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	srv := newServer(t, st, true)
	writeKey := srv.key("acme", "write")
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`{"url":"ftp://example.com/h"}`, 400, "url: want an http:// or https:// URL"},
		{`{"url":"example.com/h"}`, 400, "url: want an http:// or https:// URL"},
		{`{"url":"http:///h"}`, 400, "url: has no host"},
		{`{"url":"http://exa mple.com/"}`, 400, "url: contains spaces"},
		{`{"url":"http://example.com:99999/"}`, 400, "url: want a port"},
		{`{}`, 400, "url: required"},
		{`{"url":"https://example.com/h","events":["build.exploded"]}`, 400, "events[0]: unknown event"},
		{`{"url":"https://example.com/h","events":[]}`, 400, "events: want one or more"},
		{`{"url":"https://example.com/h","secret":"mine"}`, 400, "body.secret: unknown field"},
		{`{"url":"https://example.com/h","team":"bad team"}`, 400, "team: want"},
		{`[1]`, 400, "body"},
		{``, 400, "body: empty"},
	} {
		code, body := srv.do("POST", "/v1/webhooks", adminKey, []byte(c.body))
		if code != c.code || !strings.Contains(string(body), c.want) {
			t.Errorf("POST /v1/webhooks %s: %d %s, want %d with %q", c.body, code, body, c.code, c.want)
		}
	}
	if code, _ := srv.do("POST", "/v1/webhooks", writeKey, map[string]any{"url": "https://example.com/h", "team": "acme"}); code != 403 {
		t.Errorf("a write key naming a team: %d, want 403", code)
	}
	if code, _ := srv.do("GET", "/v1/webhooks/x/deliveries?limit=0", adminKey, nil); code != 400 {
		t.Errorf("limit=0: %d, want 400", code)
	}
	if hs, _ := st.Webhooks(context.Background(), ""); len(hs) != 0 {
		t.Errorf("refused requests stored %d hooks", len(hs))
	}
	// Events come back deduplicated, in their order.
	h := srv.hook(writeKey, "", "https://example.com/h", "build.finished", "build.started", "build.finished")
	if !slices.Equal(h.Events, []string{"build.started", "build.finished"}) || h.Team != "acme" {
		t.Errorf("created %+v", h)
	}
}

// The idle sweep's timeout is a build.finished like any other.
func TestIdleTimeoutEmitsFinished(t *testing.T) {
	eachStore(t, func(t *testing.T, st buildlog.Store) {
		srv := newServer(t, st, true)
		rc := testkit.NewReceiver(t, nil)
		startDeliverer(t, st)
		srv.hook(adminKey, "", rc.URL, buildlog.EventBuildFinished)
		srv.want(201, "POST", "/v1/templates/tmpl/builds", adminKey, map[string]any{"build_id": "idle1"}, nil)
		sw := &sweep.Idle{Store: srv.api.Store(), Timeout: time.Minute,
			Now: func() time.Time { return time.Now().Add(time.Hour) }}
		if n, err := sw.Once(context.Background()); err != nil || n != 1 {
			t.Fatalf("sweep: %d, %v; want 1 build timed out", n, err)
		}
		e := rc.Next(t).Event()
		if e.Type != buildlog.EventBuildFinished || e.Build.ID != "idle1" || e.Build.Status != buildlog.StatusTimeout {
			t.Errorf("after the idle sweep: %+v", e)
		}
	})
}

// Redirects are not followed: the 3xx is the answer, and a failure.
func TestNoRedirects(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	srv := newServer(t, st, true)
	elsewhere := testkit.NewReceiver(t, nil)
	rc := testkit.NewRawReceiver(t, func(rc *testkit.Receiver, w http.ResponseWriter, r *http.Request) {
		rc.Note(r)
		http.Redirect(w, r, elsewhere.URL, http.StatusTemporaryRedirect)
	})
	startDeliverer(t, st)
	h := srv.hook(adminKey, "", rc.URL, buildlog.EventBuildFinished)
	srv.build(adminKey, "rd", buildlog.StatusReady)
	testkit.Eventually(t, 20*time.Second, "an attempt", func() bool { return len(srv.deliveries(adminKey, h.ID)) > 0 })
	d := srv.deliveries(adminKey, h.ID)
	if last := d[len(d)-1]; last.StatusCode != 307 || last.Result != "retrying" || !strings.Contains(last.Error, "redirects are not followed") {
		t.Errorf("a redirect: %+v", last)
	}
	if elsewhere.Count() != 0 {
		t.Errorf("the redirect was followed: %d requests elsewhere", elsewhere.Count())
	}
}

// A receiver that never answers holds at most PerHook workers; other hooks
// are delivered meanwhile.
func TestSlowReceiverDoesNotHoldUpOthers(t *testing.T) {
	eachStore(t, func(t *testing.T, st buildlog.Store) {
		srv := newServer(t, st, true)
		release := make(chan struct{})
		var (
			mu             sync.Mutex
			inFlight, most int
		)
		slow := testkit.NewRawReceiver(t, func(rc *testkit.Receiver, w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			inFlight++
			most = max(most, inFlight)
			mu.Unlock()
			rc.Note(r)
			<-release
			mu.Lock()
			inFlight--
			mu.Unlock()
		})
		fast := testkit.NewReceiver(t, nil)
		startDeliverer(t, st, func(d *webhook.Deliverer) { d.Workers, d.PerHook = 4, 2 })
		srv.hook(adminKey, "slow", slow.URL, buildlog.EventBuildFinished)
		srv.hook(adminKey, "fast", fast.URL, buildlog.EventBuildFinished)
		slowKey, fastKey := srv.key("slow", "write"), srv.key("fast", "write")
		for _, id := range []string{"s1", "s2", "s3", "s4", "s5"} {
			srv.build(slowKey, id, buildlog.StatusReady)
		}
		slow.Next(t)
		slow.Next(t)
		for _, id := range []string{"f1", "f2", "f3"} {
			srv.build(fastKey, id, buildlog.StatusReady)
			if e := fast.Next(t).Event(); e.Build.ID != id {
				t.Errorf("fast hook got %s, want %s", e.Build.ID, id)
			}
		}
		close(release)
		for range 3 {
			slow.Next(t)
		}
		mu.Lock()
		defer mu.Unlock()
		if most > 2 {
			t.Errorf("the slow receiver had %d requests at once, want at most PerHook = 2", most)
		}
	})
}

// A delivery that keeps failing is given up once past MaxAge; the
// metrics count it.
func TestGivenUp(t *testing.T) {
	eachStore(t, func(t *testing.T, st buildlog.Store) {
		srv := newServer(t, st, true)
		rc := testkit.NewReceiver(t, func(int, *http.Request) int { return 503 })
		m := metrics.New()
		startDeliverer(t, st, func(d *webhook.Deliverer) { d.MaxAge, d.Metrics = 300*time.Millisecond, m })
		h := srv.hook(adminKey, "", rc.URL, buildlog.EventBuildFinished)
		srv.build(adminKey, "g1", buildlog.StatusReady)
		testkit.Eventually(t, 20*time.Second, "given up", func() bool {
			ds := srv.deliveries(adminKey, h.ID)
			return len(ds) > 0 && ds[0].Result == "given_up"
		})
		ds := srv.deliveries(adminKey, h.ID)
		if len(ds) < 2 || ds[0].Attempt != len(ds) || ds[0].StatusCode != 503 {
			t.Errorf("records: %+v; want retries then given_up on the last", ds)
		}
		if q, _ := st.PendingDeliveries(context.Background()); q.Pending != 0 {
			t.Errorf("after giving up: %d pending", q.Pending)
		}
		n := rc.Count()
		time.Sleep(200 * time.Millisecond)
		if rc.Count() != n {
			t.Errorf("attempts after giving up: %d more", rc.Count()-n)
		}
		body := scrape(t, m)
		for _, want := range []string{`buildlog_webhook_deliveries_total{result="given_up"} 1`, `buildlog_webhook_deliveries_total{result="retrying"} `} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

// Queue depth and the oldest pending event's age are exported.
func TestQueueMetrics(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	srv := newServer(t, st, true)
	m := metrics.New()
	webhook.SetStatsEvery(t, 50*time.Millisecond)
	startDeliverer(t, st, func(d *webhook.Deliverer) { d.Metrics, d.Backoff = m, time.Hour })
	srv.hook(adminKey, "", "http://"+testkit.FreeAddr(t)+"/", buildlog.EventBuildFinished)
	srv.build(adminKey, "q1", buildlog.StatusReady)
	srv.build(adminKey, "q2", buildlog.StatusReady)
	testkit.Eventually(t, 20*time.Second, "queue depth 2 exported", func() bool {
		return strings.Contains(scrape(t, m), "buildlog_webhook_queue_depth 2\n")
	})
	if strings.Contains(scrape(t, m), "buildlog_webhook_oldest_pending_seconds 0\n") {
		t.Error("oldest pending age 0 with two pending")
	}
}

// Shutdown cuts an attempt short and releases it: the next deliverer makes
// it at once, and it counts as the first attempt.
func TestShutdownReleasesClaim(t *testing.T) {
	eachStore(t, func(t *testing.T, st buildlog.Store) {
		srv := newServer(t, st, true)
		hang := make(chan struct{})
		rc := testkit.NewRawReceiver(t, func(rc *testkit.Receiver, w http.ResponseWriter, r *http.Request) {
			if rc.Note(r) == 1 {
				select {
				case <-hang:
				case <-r.Context().Done():
				}
			}
		})
		t.Cleanup(func() { close(hang) })
		h := srv.hook(adminKey, "", rc.URL, buildlog.EventBuildFinished)

		d1 := &webhook.Deliverer{Store: st, AllowPrivate: true}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); d1.Run(ctx) }()
		srv.build(adminKey, "sd", buildlog.StatusReady)
		first := rc.Next(t)
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return within 10 s of its context ending")
		}

		startDeliverer(t, st) // a restart, or another server
		second := rc.Next(t)
		if first.Header.Get("Buildlog-Delivery") != second.Header.Get("Buildlog-Delivery") {
			t.Errorf("after the restart: event %s, want %s again", second.Header.Get("Buildlog-Delivery"), first.Header.Get("Buildlog-Delivery"))
		}
		testkit.Eventually(t, 20*time.Second, "the delivery recorded", func() bool { return len(srv.deliveries(adminKey, h.ID)) == 1 })
		if d := srv.deliveries(adminKey, h.ID)[0]; d.Attempt != 1 || d.Result != "delivered" {
			t.Errorf("record %+v: want attempt 1 delivered (the cut attempt is not counted)", d)
		}
	})
}

// Two servers on one PostgreSQL deliver every event, and never the same
// one at the same time: every event fails once, then succeeds, so each
// is attempted twice, possibly by either server.
func TestTwoServersOnPostgres(t *testing.T) {
	if pg == nil {
		t.Skip("BUILDLOG_TEST_POSTGRES is unset: set it to a DSN of a server where tests may create databases")
	}
	dsn := pgSchema(t)
	a, b := testkit.OpenStore(t, postgres.Open, dsn), testkit.OpenStore(t, postgres.Open, dsn)
	srv := newServer(t, a, true)
	var (
		mu       sync.Mutex
		inFlight = map[string]bool{}
		tries    = map[string]int{}
		overlaps []string
	)
	rc := testkit.NewRawReceiver(t, func(rc *testkit.Receiver, w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("Buildlog-Delivery")
		mu.Lock()
		if inFlight[id] {
			overlaps = append(overlaps, id)
		}
		inFlight[id] = true
		tries[id]++
		n := tries[id]
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // long enough for a second claim to overlap, were one made
		mu.Lock()
		inFlight[id] = false
		mu.Unlock()
		rc.Note(r)
		if n == 1 {
			w.WriteHeader(500)
		}
	})
	ma, mb := metrics.New(), metrics.New()
	startDeliverer(t, a, func(d *webhook.Deliverer) { d.Metrics, d.Workers = ma, 3 })
	startDeliverer(t, b, func(d *webhook.Deliverer) { d.Metrics, d.Workers = mb, 3 })
	srv.hook(adminKey, "", rc.URL, buildlog.EventBuildFinished)
	const builds = 30
	for i := range builds {
		srv.build(adminKey, fmt.Sprintf("pg%02d", i), buildlog.StatusReady)
	}
	for range 2 * builds {
		rc.Next(t)
	}
	testkit.Eventually(t, 20*time.Second, "an empty outbox", func() bool {
		q, err := a.PendingDeliveries(context.Background())
		return err == nil && q.Pending == 0
	})
	mu.Lock()
	defer mu.Unlock()
	if len(tries) != builds {
		t.Errorf("%d events delivered, want %d", len(tries), builds)
	}
	for id, n := range tries {
		if n != 2 {
			t.Errorf("event %s attempted %d times, want 2", id, n)
		}
	}
	if len(overlaps) > 0 {
		t.Errorf("%d attempts overlapped another at the same event, e.g. %s", len(overlaps), overlaps[0])
	}
	t.Logf("delivered by server a: %s; by b: %s", counter(scrape(t, ma)), counter(scrape(t, mb)))
}

func counter(exposition string) string {
	for _, l := range strings.Split(exposition, "\n") {
		if strings.HasPrefix(l, `buildlog_webhook_deliveries_total{result="delivered"}`) {
			return strings.Fields(l)[1]
		}
	}
	return "?"
}

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	return w.Body.String()
}
