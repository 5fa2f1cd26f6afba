package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"buildlog/internal/storetest"
)

// The background checkpointer moves committed pages into the database file
// long before the writer's own autocheckpoint would (writerCheckpointPages),
// and appends keep working while it does.
func TestBackgroundCheckpoint(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	ctx := context.Background()
	if err := s.CreateBuild(ctx, storetest.NewBuild("ck", storetest.At(0))); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, FileName)
	before := fileSize(t, db)
	batch := benchBatch(1000) // ~160 KiB a chunk
	for range 10 {
		if _, err := s.Append(ctx, "ck", batch, storetest.At(1)); err != nil {
			t.Fatal(err)
		}
	}
	var frames int64
	if err := s.w.QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&frames); err != nil || frames != writerCheckpointPages {
		t.Fatalf("writer's wal_autocheckpoint = %d, %v; want %d", frames, err, writerCheckpointPages)
	}
	// ~1.6 MB of chunks is ~200 pages of 8 KiB, far below the writer's mark:
	// only the background checkpoint can have copied them.
	deadline := time.Now().Add(15 * time.Second)
	for fileSize(t, db) < before+1<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("database file still %d bytes (was %d): no background checkpoint", fileSize(t, db), before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	chunks, err := s.ReadLog(ctx, "ck", 0, 1<<30)
	if err != nil || len(chunks) != 10 || chunks[9].End() != 10000 {
		t.Fatalf("ReadLog after checkpoint: %d chunks, %v", len(chunks), err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
