package postgres

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"buildlog"
	"buildlog/internal/sqlite"
	"buildlog/internal/storetest"
	"buildlog/internal/wire"
)

// TestImportFromSQLite fills a real embedded store through the Store
// interface, imports it, and expects PostgreSQL to hold the same: builds
// field for field, logs byte for byte at the same offsets, keys with their
// hashes, the secret; and the copy to go on working as a store.
func TestImportFromSQLite(t *testing.T) {
	pg := newStore(t)
	ctx := t.Context()
	src, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	for i := range 3 {
		k := &buildlog.Key{ID: fmt.Sprintf("k%d", i), Team: "acme", Scopes: []buildlog.Scope{buildlog.ScopeRead, buildlog.ScopeWrite},
			Name: "ci", CreatedAt: storetest.At(i), Hash: buildlog.HashKey(fmt.Sprintf("secret-%d", i))}
		if err := src.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	hook := storetest.NewHook("wh_1", "acme", storetest.At(0), buildlog.EventBuildFinished)
	if err := src.CreateWebhook(ctx, hook); err != nil {
		t.Fatal(err)
	}
	// Several listing pages of the import, some builds finished, one with
	// every optional field, one never appended to.
	importBuilds = 7
	t.Cleanup(func() { importBuilds = 500 })
	const builds = 45
	for i := range builds {
		b := storetest.NewBuild(fmt.Sprintf("b%04d", i), storetest.At(i%20))
		if i == 7 {
			b.Namespace, b.Name, b.Version = "acme", "img", "1.0.0"
			b.TotalSteps, b.MaxAttempts = new(int64(5)), new(int64(3))
			b.Metadata = json.RawMessage(`{"z":1,"a":[true]}`)
			b.Secrets = []string{"hunter2"}
		}
		if err := src.CreateBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
		if i%40 == 5 {
			continue
		}
		for j := range 1 + i%3 {
			if _, err := src.Append(ctx, b.ID, storetest.RetryBatchOf(uint64(j*4), storetest.Messages(fmt.Sprintf("%s/%d", b.ID, j), 4)...), storetest.At(60+j)); err != nil {
				t.Fatal(err)
			}
		}
		if i%2 == 0 {
			f := &buildlog.Finish{Status: buildlog.StatusFailed, Result: json.RawMessage(`{"exit":2}`), Timestamp: storetest.Timestamp}
			if _, _, err := src.Finish(ctx, b.ID, f, storetest.At(70)); err != nil {
				t.Fatal(err)
			}
		}
	}

	var calls int
	st, err := pg.Import(ctx, src, func(ImportStats) { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	if st.Builds != builds || st.Keys != 3 || st.Webhooks != 1 || calls != builds {
		t.Errorf("Import = %+v with %d progress calls, want %d builds, 3 keys, 1 webhook", st, calls, builds)
	}
	if got, err := pg.Webhooks(ctx, ""); err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], hook) {
		t.Errorf("webhooks: got %+v (%v), want %+v", got, err, hook)
	}
	// The source's pending deliveries stay there; the copy records none.
	if q, err := pg.PendingDeliveries(ctx); err != nil || q.Pending != 0 {
		t.Errorf("pending deliveries after import: %+v (%v), want none", q, err)
	}

	wantKeys, _ := src.Keys(ctx)
	gotKeys, err := pg.Keys(ctx)
	if err != nil || !reflect.DeepEqual(gotKeys, wantKeys) {
		t.Errorf("keys: got %+v (%v), want %+v", gotKeys, err, wantKeys)
	}
	wantSecret, _ := src.Secret(ctx)
	if got, err := pg.Secret(ctx); err != nil || string(got) != string(wantSecret) {
		t.Errorf("secret not copied: %x (%v)", got, err)
	}
	wantBuilds, _ := src.Builds(ctx, buildlog.BuildFilter{})
	gotBuilds, err := pg.Builds(ctx, buildlog.BuildFilter{})
	if err != nil || len(gotBuilds) != builds {
		t.Fatalf("Builds: %d, %v; want %d", len(gotBuilds), err, builds)
	}
	var entries uint64
	for i, want := range wantBuilds {
		got := gotBuilds[i]
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("build %d:\n got %+v\nwant %+v", i, got, want)
		}
		entries += want.NextOffset
		if !reflect.DeepEqual(storetest.ReadAll(t, pg, want.ID), storetest.ReadAll(t, src, want.ID)) {
			t.Fatalf("build %s: logs differ", want.ID)
		}
	}
	if st.Entries != entries {
		t.Errorf("Import counted %d entries, want %d", st.Entries, entries)
	}

	// The copy is a working store: a running build goes on where it was.
	res, err := pg.Append(ctx, "b0001", storetest.RetryBatchOf(8, "after the move"), storetest.At(80))
	if err != nil || res.FirstOffset != 8 {
		t.Errorf("Append after import: %+v, %v; want first offset 8", res, err)
	}
	// Only into an empty database.
	if _, err := pg.Import(ctx, src, nil); buildlog.ErrorCode(err) != buildlog.EConflict {
		t.Errorf("Import into a used database: %v, want conflict", err)
	}
}

// BenchmarkImport copies an embedded store of 20 builds of 50,000 entries
// (1000-entry batches, about 150 bytes an entry) into a fresh schema.
func BenchmarkImport(b *testing.B) {
	if testDB == nil {
		b.Skip("BUILDLOG_TEST_POSTGRES is unset")
	}
	ctx := b.Context()
	src, err := sqlite.Open(ctx, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	const builds, batches = 20, 50
	batch := wire.NewBatch(entries150(1000), nil, nil)
	for i := range builds {
		id := fmt.Sprintf("b%d", i)
		if err := src.CreateBuild(ctx, storetest.NewBuild(id, storetest.At(i))); err != nil {
			b.Fatal(err)
		}
		for range batches {
			if _, err := src.Append(ctx, id, batch, storetest.At(100)); err != nil {
				b.Fatal(err)
			}
		}
	}
	var entries uint64
	for b.Loop() {
		b.StopTimer()
		dst := open(b, freshSchema(b))
		b.StartTimer()
		st, err := dst.Import(ctx, src, nil)
		if err != nil {
			b.Fatal(err)
		}
		entries += st.Entries
	}
	b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
}
