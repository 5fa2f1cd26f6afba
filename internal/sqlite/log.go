package sqlite

import (
	"context"
	"database/sql"
	"math"
	"time"
	"unsafe"

	"buildlog"
	"buildlog/internal/logwrite"
	"buildlog/internal/segment"
	"buildlog/internal/wire"
)

// Append stores b at the build's next offset through the group-commit
// writer: the batch shares a transaction, and its flush, with whatever
// else was queued while the previous group committed.
func (s *Store) Append(ctx context.Context, buildID string, b *buildlog.Batch, now time.Time) (buildlog.AppendResult, error) {
	return logwrite.Append(ctx, s.Q, buildID, b, now)
}

// Finish appends f's terminal entry as a terminal chunk and sets the
// status, in one transaction of the group-commit writer, so that it is
// ordered with every append to the build.
func (s *Store) Finish(ctx context.Context, buildID string, f *buildlog.Finish, now time.Time) (*buildlog.Build, buildlog.Chunk, error) {
	return logwrite.Finish(ctx, s.Q, buildID, f, now)
}

// ReadLog returns whole stored chunks in offset order, the first being the
// one holding from; it stops once maxBytes were read (after at least one).
// Segments are decompressed; where the size cap dropped entries it returns
// the omission notice in their place. An unknown build has no chunks, like
// an empty one.
func (s *Store) ReadLog(ctx context.Context, buildID string, from uint64, maxBytes int) ([]buildlog.Chunk, error) {
	if from > math.MaxInt64 {
		return nil, nil
	}
	rows, err := s.readLog.QueryContext(ctx, buildID, int64(from))
	if err != nil {
		return nil, wrap("read log", err)
	}
	defer rows.Close()
	var (
		out    []buildlog.Chunk
		read   int
		expect = from // the next offset a reader is owed
	)
	for rows.Next() {
		var (
			first, n, terminal, codec, size int64
			data, templateID, omTS          string
			omFrom, omTo                    sql.NullInt64
			omEntries, omBytes              int64
		)
		// The chunk outlives Next, so data cannot be sql.RawBytes (the
		// driver's memory, valid only until Next), and scanning into
		// []byte copies every chunk a second time (BenchmarkReadLog: about
		// 40% fewer entries/s). The query reads data as TEXT instead: the
		// driver hands it over as a string of its own allocation, which
		// database/sql passes on uncopied and which is the caller's to
		// keep. Chunk data is read-only to everyone (readers share chunks),
		// so viewing the string's bytes as a []byte is safe.
		if err := rows.Scan(&first, &n, &terminal, &codec, &size, &data,
			&templateID, &omFrom, &omTo, &omEntries, &omBytes, &omTS); err != nil {
			return nil, wrap("read log", err)
		}
		c := buildlog.Chunk{First: uint64(first), Count: int(n), Terminal: terminal != 0}
		if c.End() <= from || len(out) > 0 && c.First < expect {
			// Before from, or a leftover of a compaction that the
			// segment just read covers (see compactLog.Swap). A leftover
			// read first is the log's own lines and is read as such.
			continue
		}
		if c.First > expect && omFrom.Valid && omTo.Valid && c.First == uint64(omTo.Int64)+1 {
			o := buildlog.Omitted{From: uint64(omFrom.Int64), To: uint64(omTo.Int64),
				Entries: uint64(omEntries), Bytes: uint64(omBytes), Timestamp: omTS}
			out = append(out, wire.Notice(&o, buildID, templateID, expect, s.LogCap.MaxBytes))
		}
		raw := unsafe.Slice(unsafe.StringData(data), len(data))
		if c.Data, err = segment.Decode(int(codec), raw, int(size)); err != nil {
			return nil, wrap("read log", err)
		}
		out = append(out, c)
		expect = c.End()
		if read += len(c.Data); read >= maxBytes || len(out) >= buildlog.MaxReadChunks {
			break
		}
	}
	return out, wrap("read log", rows.Err())
}
