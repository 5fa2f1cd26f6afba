package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"buildlog"
)

// Lease is the claim lease the webhook tests use.
const Lease = 30 * time.Second

// NewHook returns a hook of team on url taking events, created at created.
func NewHook(id, team string, created time.Time, events ...string) *buildlog.Webhook {
	return &buildlog.Webhook{ID: id, Team: team, URL: "https://hooks.example.com/" + id,
		Events: events, CreatedAt: created, Secret: "whsec_" + id}
}

func createHook(t *testing.T, s buildlog.Store, h *buildlog.Webhook) {
	t.Helper()
	if err := s.CreateWebhook(t.Context(), h); err != nil {
		t.Fatalf("CreateWebhook(%s): %v", h.ID, err)
	}
}

func wantHook(t *testing.T, got, want *buildlog.Webhook) {
	t.Helper()
	if got.ID != want.ID || got.Team != want.Team || got.URL != want.URL || got.Secret != want.Secret ||
		!slices.Equal(got.Events, want.Events) {
		t.Errorf("hook = %+v, want %+v", got, want)
	}
	for _, d := range diffTime("CreatedAt", got.CreatedAt, want.CreatedAt) {
		t.Errorf("hook %s: %s", want.ID, d)
	}
}

func hookIDs(hs []*buildlog.Webhook) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.ID
	}
	return out
}

// claim claims up to limit deliveries at now, which must succeed.
func claim(t *testing.T, s buildlog.Store, now time.Time, limit int, skip ...string) []*buildlog.Delivery {
	t.Helper()
	ds, err := s.ClaimDeliveries(t.Context(), now, Lease, limit, skip)
	if err != nil {
		t.Fatalf("ClaimDeliveries(%v): %v", now, err)
	}
	return ds
}

func pending(t *testing.T, s buildlog.Store) buildlog.DeliveryQueue {
	t.Helper()
	q, err := s.PendingDeliveries(t.Context())
	if err != nil {
		t.Fatalf("PendingDeliveries: %v", err)
	}
	return q
}

// EventBody is a delivery body, decoded: what a hook receives.
type EventBody struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	CreatedAt time.Time       `json:"created_at"`
	Build     *buildlog.Build `json:"build"`
}

func decodeBody(t *testing.T, d *buildlog.Delivery) EventBody {
	t.Helper()
	var b EventBody
	if err := json.Unmarshal(d.Body, &b); err != nil || b.Build == nil {
		t.Fatalf("delivery body %s: %v", d.Body, err)
	}
	return b
}

// key names a delivery by what it is for, so tests compare sets.
func key(d *buildlog.Delivery) string { return d.HookID + " " + d.Type + " " + d.BuildID }

func keys(ds []*buildlog.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = key(d)
	}
	sort.Strings(out)
	return out
}

func testWebhooks(t *testing.T, s buildlog.Store) {
	h1 := NewHook("wh_1", "acme", At(1), buildlog.EventBuildStarted, buildlog.EventBuildFinished)
	h2 := NewHook("wh_2", "other", At(2), buildlog.EventBuildFinished)
	h3 := NewHook("wh_3", "acme", At(3), buildlog.EventBuildStarted)
	// Created out of order: listings follow CreatedAt.
	for _, h := range []*buildlog.Webhook{h3, h1, h2} {
		createHook(t, s, h)
	}
	got, err := s.Webhook(t.Context(), h1.ID)
	if err != nil {
		t.Fatalf("Webhook: %v", err)
	}
	wantHook(t, got, h1)
	for _, tt := range []struct {
		team string
		want []string
	}{{"", []string{"wh_1", "wh_2", "wh_3"}}, {"acme", []string{"wh_1", "wh_3"}}, {"nobody", nil}} {
		hs, err := s.Webhooks(t.Context(), tt.team)
		if err != nil {
			t.Fatalf("Webhooks(%q): %v", tt.team, err)
		}
		if got := hookIDs(hs); !slices.Equal(got, tt.want) {
			t.Errorf("Webhooks(%q) = %q, want %q", tt.team, got, tt.want)
		}
		if tt.team == "" {
			wantHook(t, hs[1], h2)
		}
	}

	dup := NewHook("wh_1", "acme", At(9), buildlog.EventBuildFinished)
	wantCode(t, s.CreateWebhook(t.Context(), dup), buildlog.EConflict, "CreateWebhook of an existing id")
	got, _ = s.Webhook(t.Context(), h1.ID)
	wantHook(t, got, h1)

	if err := s.DeleteWebhook(t.Context(), h3.ID); err != nil {
		t.Fatalf("DeleteWebhook: %v", err)
	}
	_, err = s.Webhook(t.Context(), h3.ID)
	wantCode(t, err, buildlog.ENotFound, "Webhook of a deleted hook")
	wantCode(t, s.DeleteWebhook(t.Context(), h3.ID), buildlog.ENotFound, "DeleteWebhook of a deleted hook")
	wantCode(t, s.DeleteWebhook(t.Context(), "wh_unknown"), buildlog.ENotFound, "DeleteWebhook of an unknown hook")
	hs, _ := s.Webhooks(t.Context(), "acme")
	if got := hookIDs(hs); !slices.Equal(got, []string{"wh_1"}) {
		t.Errorf("Webhooks(acme) after delete = %q", got)
	}
}

// testWebhookEvents checks which changes record events, for which hooks,
// and what the recorded body says.
func testWebhookEvents(t *testing.T, s buildlog.Store) {
	createHook(t, s, NewHook("wh_all", "acme", At(0), buildlog.EventBuildStarted, buildlog.EventBuildFinished))
	createHook(t, s, NewHook("wh_fin", "acme", At(0), buildlog.EventBuildFinished))
	createHook(t, s, NewHook("wh_other", "other", At(0), buildlog.EventBuildStarted, buildlog.EventBuildFinished))

	b := NewBuild("ev", At(1))
	create(t, s, b)
	if q := pending(t, s); q.Pending != 0 {
		t.Fatalf("after CreateBuild: %d pending, want 0 (creation is no event)", q.Pending)
	}

	appendOK(t, s, b.ID, BatchOf("one"), At(2))
	// A new event is due at once, even to a claimer whose clock is behind
	// the one that recorded it.
	started := claim(t, s, At(0), 10)
	if got, want := keys(started), []string{"wh_all build.started ev"}; !slices.Equal(got, want) {
		t.Fatalf("after the first append: deliveries %q, want %q", got, want)
	}
	d := started[0]
	if d.Attempt != 1 || d.URL != "https://hooks.example.com/wh_all" || d.Secret != "whsec_wh_all" || !d.CreatedAt.Equal(At(2)) || d.Claim == "" {
		t.Errorf("delivery = %+v; want attempt 1, wh_all's URL and secret, CreatedAt %v, a claim", d, At(2))
	}
	body := decodeBody(t, d)
	if body.ID != d.EventID || body.Type != buildlog.EventBuildStarted || !body.CreatedAt.Equal(At(2)) ||
		body.Build.ID != "ev" || body.Build.Status != buildlog.StatusBuilding || body.Build.Team != "acme" ||
		body.Build.NextOffset != 1 || body.Build.EntryCount != 1 || body.Build.StartedAt == nil || body.Build.FinishedAt != nil {
		t.Errorf("build.started body = %s", d.Body)
	}

	appendOK(t, s, b.ID, BatchOf("two"), At(3))
	if q := pending(t, s); q.Pending != 1 {
		t.Errorf("after a second append: %d pending, want 1 (only the first append starts a build)", q.Pending)
	}

	finishOK(t, s, b.ID, buildlog.StatusReady, At(4))
	// Finishing again with the same status, or refused with another,
	// changes nothing and records nothing.
	finishOK(t, s, b.ID, buildlog.StatusReady, At(5))
	_, _, err := s.Finish(t.Context(), b.ID, &buildlog.Finish{Status: buildlog.StatusFailed, Timestamp: Timestamp}, At(5))
	wantCode(t, err, buildlog.EConflict, "Finish with another status")
	_, err = s.Append(t.Context(), b.ID, BatchOf("late"), At(5))
	wantCode(t, err, buildlog.EConflict, "Append after Finish")
	if q := pending(t, s); q.Pending != 3 {
		t.Errorf("after finishing: %d pending, want 3", q.Pending)
	}

	// A build of another team reaches only that team's hook; one finished
	// straight from queued has no build.started.
	o := NewBuild("ev-other", At(6))
	o.Team = "other"
	create(t, s, o)
	finishOK(t, s, o.ID, buildlog.StatusCancelled, At(7))

	// The idle sweep's conditional Finish records build.finished too; a
	// refused one records nothing.
	idle := NewBuild("ev-idle", At(8))
	create(t, s, idle)
	_, _, err = s.Finish(t.Context(), idle.ID, &buildlog.Finish{Status: buildlog.StatusTimeout, Timestamp: Timestamp, IdleBefore: At(8)}, At(9))
	wantCode(t, err, buildlog.EConflict, "conditional Finish of an active build")
	if _, _, err := s.Finish(t.Context(), idle.ID, &buildlog.Finish{Status: buildlog.StatusTimeout, Timestamp: Timestamp, IdleBefore: At(9)}, At(9)); err != nil {
		t.Fatalf("conditional Finish of an idle build: %v", err)
	}

	all := claim(t, s, At(100), 100) // past the first claim's lease
	want := []string{
		"wh_all build.finished ev", "wh_all build.finished ev-idle", "wh_all build.started ev",
		"wh_fin build.finished ev", "wh_fin build.finished ev-idle", "wh_other build.finished ev-other",
	}
	if got := keys(all); !slices.Equal(got, want) {
		t.Fatalf("deliveries = %q, want %q", got, want)
	}
	byKey := map[string]*buildlog.Delivery{}
	for _, d := range all {
		byKey[key(d)] = d
	}
	fa, ff := byKey["wh_all build.finished ev"], byKey["wh_fin build.finished ev"]
	if fa.EventID != ff.EventID || string(fa.Body) != string(ff.Body) {
		t.Errorf("one event to two hooks: ids %s, %s and bodies differ; want one id and one body", fa.EventID, ff.EventID)
	}
	if st := byKey["wh_all build.started ev"]; st.EventID != d.EventID || st.EventID == fa.EventID || string(st.Body) != string(d.Body) {
		t.Errorf("build.started: id %s (first claim %s), build.finished id %s; want the same started id and body again, another for finished", st.EventID, d.EventID, fa.EventID)
	}
	events := map[string]bool{}
	for _, d := range all {
		events[d.EventID] = true
	}
	if len(events) != 4 {
		t.Errorf("%d distinct event ids, want 4 (ev started, ev finished, ev-other and ev-idle finished)", len(events))
	}
	fin := decodeBody(t, fa)
	if fin.Type != buildlog.EventBuildFinished || fin.Build.Status != buildlog.StatusReady || fin.Build.FinishedAt == nil ||
		!fin.Build.FinishedAt.Equal(At(4)) || fin.Build.NextOffset != 3 || !fin.CreatedAt.Equal(At(4)) {
		t.Errorf("build.finished body = %s", fa.Body)
	}
	if ib := decodeBody(t, byKey["wh_all build.finished ev-idle"]); ib.Build.Status != buildlog.StatusTimeout {
		t.Errorf("idle sweep's build.finished: status %s, want timeout", ib.Build.Status)
	}
	if ob := decodeBody(t, byKey["wh_other build.finished ev-other"]); ob.Build.Status != buildlog.StatusCancelled || ob.Build.Team != "other" {
		t.Errorf("other team's build.finished body = %s", byKey["wh_other build.finished ev-other"].Body)
	}
	if q := pending(t, s); q.Pending != 6 || !q.Oldest.Equal(At(2)) {
		t.Errorf("PendingDeliveries = %+v, want 6 pending, oldest %v (claimed ones count)", q, At(2))
	}
}

// finishedEvents makes n builds of team acme finished at At(1), At(2), ….
func finishedEvents(t *testing.T, s buildlog.Store, prefix string, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		b := NewBuild(fmt.Sprintf("%s%d", prefix, i), At(0))
		create(t, s, b)
		finishOK(t, s, b.ID, buildlog.StatusReady, At(i))
	}
}

func testClaimDeliveries(t *testing.T, s buildlog.Store) {
	createHook(t, s, NewHook("wh_a", "acme", At(0), buildlog.EventBuildFinished))
	createHook(t, s, NewHook("wh_o", "other", At(0), buildlog.EventBuildFinished))
	finishedEvents(t, s, "c", 3)
	o := NewBuild("o1", At(0))
	o.Team = "other"
	create(t, s, o)
	finishOK(t, s, o.ID, buildlog.StatusReady, At(4))

	first := claim(t, s, At(10), 2)
	if len(first) != 2 || first[0].BuildID != "c1" || first[1].BuildID != "c2" {
		t.Fatalf("claim of 2: %q, want c1 then c2 (oldest due first)", keys(first))
	}
	rest := claim(t, s, At(10), 10)
	if got, want := keys(rest), []string{"wh_a build.finished c3", "wh_o build.finished o1"}; !slices.Equal(got, want) {
		t.Fatalf("second claim: %q, want %q (claimed ones are not due)", got, want)
	}
	if ds := claim(t, s, At(10).Add(Lease-time.Microsecond), 10); len(ds) != 0 {
		t.Errorf("claim within the lease: %q", keys(ds))
	}
	if ds := claim(t, s, At(0), 0); len(ds) != 0 {
		t.Errorf("claim of 0: %q", keys(ds))
	}

	// Once the lease runs out the deliveries are due again, as if the
	// claimer had died; the attempt it did not record is not counted.
	later := At(10).Add(Lease)
	skipped := claim(t, s, later, 10, "wh_a")
	if got, want := keys(skipped), []string{"wh_o build.finished o1"}; !slices.Equal(got, want) {
		t.Fatalf("claim skipping wh_a: %q, want %q", got, want)
	}
	again := claim(t, s, later, 10)
	if len(again) != 3 {
		t.Fatalf("claim after the lease: %q, want c1, c2, c3", keys(again))
	}
	if again[0].EventID != first[0].EventID || again[0].Attempt != 1 || again[0].Claim == first[0].Claim {
		t.Errorf("reclaimed c1: event %s attempt %d claim %s; want event %s, attempt 1, a new claim",
			again[0].EventID, again[0].Attempt, again[0].Claim, first[0].EventID)
	}
	// The old claim no longer holds: recording under it changes nothing.
	a := &buildlog.DeliveryAttempt{Attempt: 1, StatusCode: 200, Result: buildlog.ResultDelivered, At: later}
	wantCode(t, s.RecordDelivery(t.Context(), first[0], a, time.Time{}), buildlog.EConflict, "RecordDelivery under a lost claim")
	if rs, _ := s.DeliveryAttempts(t.Context(), "wh_a", 10); len(rs) != 0 {
		t.Errorf("a lost claim's RecordDelivery stored %d records", len(rs))
	}
	if err := s.RecordDelivery(t.Context(), again[0], a, time.Time{}); err != nil {
		t.Fatalf("RecordDelivery under the current claim: %v", err)
	}
	if q := pending(t, s); q.Pending != 3 {
		t.Errorf("after one delivered: %d pending, want 3", q.Pending)
	}
}

func testRecordDelivery(t *testing.T, s buildlog.Store) {
	createHook(t, s, NewHook("wh_r", "acme", At(0), buildlog.EventBuildFinished))
	finishedEvents(t, s, "r", 1)
	d1 := claim(t, s, At(2), 10)[0]

	a1 := &buildlog.DeliveryAttempt{Attempt: 1, StatusCode: 500, Error: "HTTP 500", Result: buildlog.ResultRetrying, DurationMS: 12, At: At(2)}
	if err := s.RecordDelivery(t.Context(), d1, a1, At(5)); err != nil {
		t.Fatalf("RecordDelivery (retry): %v", err)
	}
	if ds := claim(t, s, At(5).Add(-time.Microsecond), 10); len(ds) != 0 {
		t.Errorf("claim before the retry is due: %q", keys(ds))
	}
	d2 := claim(t, s, At(5), 10)
	if len(d2) != 1 || d2[0].EventID != d1.EventID || d2[0].Attempt != 2 || string(d2[0].Body) != string(d1.Body) {
		t.Fatalf("retry claim: %+v; want event %s again, attempt 2, the same body", d2, d1.EventID)
	}
	a2 := &buildlog.DeliveryAttempt{Attempt: 2, Error: "connection refused", Result: buildlog.ResultRetrying, DurationMS: 1, At: At(5)}
	if err := s.RecordDelivery(t.Context(), d2[0], a2, At(6)); err != nil {
		t.Fatalf("RecordDelivery (retry): %v", err)
	}
	// A release (no attempt record) keeps the count.
	d3 := claim(t, s, At(6), 10)[0]
	if err := s.RecordDelivery(t.Context(), d3, nil, At(7)); err != nil {
		t.Fatalf("RecordDelivery (release): %v", err)
	}
	d4 := claim(t, s, At(7), 10)[0]
	if d4.Attempt != 3 {
		t.Errorf("after a release: attempt %d, want 3", d4.Attempt)
	}
	a3 := &buildlog.DeliveryAttempt{Attempt: 3, StatusCode: 204, Result: buildlog.ResultDelivered, DurationMS: 3, At: At(7)}
	if err := s.RecordDelivery(t.Context(), d4, a3, time.Time{}); err != nil {
		t.Fatalf("RecordDelivery (delivered): %v", err)
	}
	if q := pending(t, s); q.Pending != 0 || !q.Oldest.IsZero() {
		t.Errorf("after delivery: %+v pending, want none", q)
	}
	if ds := claim(t, s, At(1000), 10); len(ds) != 0 {
		t.Errorf("claim after delivery: %q", keys(ds))
	}
	wantCode(t, s.RecordDelivery(t.Context(), d4, a3, time.Time{}), buildlog.EConflict, "RecordDelivery of a delivered event")

	got, err := s.DeliveryAttempts(t.Context(), "wh_r", 10)
	if err != nil {
		t.Fatalf("DeliveryAttempts: %v", err)
	}
	if len(got) != 3 {
		t.Fatalf("DeliveryAttempts: %d records, want 3", len(got))
	}
	for i, want := range []*buildlog.DeliveryAttempt{a3, a2, a1} {
		g := got[i]
		if g.ID != d1.EventID || g.Event != buildlog.EventBuildFinished || g.BuildID != "r1" || g.HookID != "wh_r" ||
			g.Attempt != want.Attempt || g.StatusCode != want.StatusCode || g.Error != want.Error ||
			g.Result != want.Result || g.DurationMS != want.DurationMS || !g.At.Equal(want.At) {
			t.Errorf("record %d = %+v, want %+v with the event's id, type, build and hook", i, g, want)
		}
	}
	if one, _ := s.DeliveryAttempts(t.Context(), "wh_r", 1); len(one) != 1 || one[0].Attempt != 3 {
		t.Errorf("DeliveryAttempts limit 1: %+v, want the newest", one)
	}
	if none, err := s.DeliveryAttempts(t.Context(), "wh_unknown", 10); err != nil || len(none) != 0 {
		t.Errorf("DeliveryAttempts of an unknown hook: %v, %v", none, err)
	}

	// Deleting the hook drops its pending deliveries and records; a
	// claimed one can no longer be recorded.
	finishedEvents(t, s, "rr", 2)
	held := claim(t, s, At(50), 1)[0]
	if err := s.DeleteWebhook(t.Context(), "wh_r"); err != nil {
		t.Fatalf("DeleteWebhook: %v", err)
	}
	wantCode(t, s.RecordDelivery(t.Context(), held, a1, At(60)), buildlog.EConflict, "RecordDelivery to a deleted hook")
	if q := pending(t, s); q.Pending != 0 {
		t.Errorf("after deleting the hook: %d pending, want 0", q.Pending)
	}
	if rs, _ := s.DeliveryAttempts(t.Context(), "wh_r", 10); len(rs) != 0 {
		t.Errorf("after deleting the hook: %d records, want 0", len(rs))
	}
	// A hook made later gets only later events.
	createHook(t, s, NewHook("wh_late", "acme", At(60), buildlog.EventBuildFinished))
	if ds := claim(t, s, At(1000), 10); len(ds) != 0 {
		t.Errorf("a new hook got earlier events: %q", keys(ds))
	}
}

func testPruneDeliveryAttempts(t *testing.T, s buildlog.Store) {
	if q := pending(t, s); q.Pending != 0 || !q.Oldest.IsZero() {
		t.Errorf("PendingDeliveries of an empty store = %+v", q)
	}
	createHook(t, s, NewHook("wh_p", "acme", At(0), buildlog.EventBuildFinished))
	finishedEvents(t, s, "p", 3)
	ds := claim(t, s, At(10), 10)
	for i, d := range ds {
		a := &buildlog.DeliveryAttempt{Attempt: 1, StatusCode: 200, Result: buildlog.ResultDelivered, At: At(i + 1)}
		if err := s.RecordDelivery(t.Context(), d, a, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.PruneDeliveryAttempts(t.Context(), At(3), 1)
	if err != nil || n != 1 {
		t.Fatalf("PruneDeliveryAttempts(limit 1) = %d, %v; want 1", n, err)
	}
	if n, err = s.PruneDeliveryAttempts(t.Context(), At(3), 0); err != nil || n != 1 {
		t.Fatalf("PruneDeliveryAttempts(no limit) = %d, %v; want 1", n, err)
	}
	rs, _ := s.DeliveryAttempts(t.Context(), "wh_p", 10)
	if len(rs) != 1 || !rs[0].At.Equal(At(3)) {
		t.Errorf("after pruning before %v: %+v, want the record made then", At(3), rs)
	}
}

// testConcurrentClaims claims from several goroutines at once: each
// delivery goes to exactly one claim.
func testConcurrentClaims(t *testing.T, s buildlog.Store) {
	createHook(t, s, NewHook("wh_c", "acme", At(0), buildlog.EventBuildFinished))
	const n = 40
	finishedEvents(t, s, "cc", n)
	var (
		mu  sync.Mutex
		got = map[string]int{}
		wg  sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for {
				ds, err := s.ClaimDeliveries(t.Context(), At(100), Lease, 3, nil)
				if err != nil {
					t.Errorf("ClaimDeliveries: %v", err)
					return
				}
				if len(ds) == 0 {
					return
				}
				mu.Lock()
				for _, d := range ds {
					got[d.EventID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(got) != n {
		t.Errorf("%d events claimed, want %d", len(got), n)
	}
	for id, c := range got {
		if c != 1 {
			t.Errorf("event %s claimed %d times", id, c)
		}
	}
}

// testWebhookEventOrder: events are due in the order they happened, so a
// build's build.started comes before its build.finished, also when both
// are recorded at once.
func testWebhookEventOrder(t *testing.T, s buildlog.Store) {
	createHook(t, s, NewHook("wh_o", "acme", At(0), buildlog.EventBuildStarted, buildlog.EventBuildFinished))
	for _, id := range []string{"o1", "o2"} {
		create(t, s, NewBuild(id, At(0)))
	}
	appendOK(t, s, "o1", BatchOf("one"), At(1))
	appendOK(t, s, "o2", BatchOf("one"), At(1))
	finishOK(t, s, "o2", buildlog.StatusReady, At(2))
	finishOK(t, s, "o1", buildlog.StatusFailed, At(2))
	ds := claim(t, s, At(3), 10)
	var got []string
	for _, d := range ds {
		got = append(got, d.BuildID+" "+d.Type)
	}
	want := []string{"o1 build.started", "o2 build.started", "o2 build.finished", "o1 build.finished"}
	if !slices.Equal(got, want) {
		t.Errorf("claimed in the order %q, want %q", got, want)
	}
}
