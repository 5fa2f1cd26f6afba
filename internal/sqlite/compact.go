package sqlite

import (
	"context"
	"database/sql"
	"time"

	"buildlog/internal/segment"
)

// StartCompactor compacts logs in the background (see Compact), every
// interval and soon after a build finishes, until Close.
func (s *Store) StartCompactor(interval time.Duration) {
	s.compactor.Start(interval, compactLog{s})
}

// Compact compacts every log that is due now (see segment.Background.All), in
// segments of about target bytes (0: segment.Target), and returns how
// many builds it rewrote. Each build's swap is one transaction of the
// writer, so it never races an append and a crash leaves the log as
// before or after.
func (s *Store) Compact(ctx context.Context, target int) (int, error) {
	n, err := s.compactor.All(ctx, compactLog{s}, target)
	return n, wrap("compact", err)
}

// compactLog is the store's side of segment.Log. The chunks it reads are
// read on the writer's connection, in the writer's turn (inWriter), and
// the swap is the writer's too.
//
// On a read connection every read after a commit starts from an empty
// page cache (SQLite drops a connection's whole cache when another has
// written), and a build's chunks lie on as many pages as it has chunks,
// interleaved with every other build that appended beside it: with 256
// builds appending, reading one finished build's chunks there cost more
// than all its appends had (BenchmarkCompactFleet, docs/PERFORMANCE.md).
// The writer's own cache still holds those pages.
type compactLog struct{ s *Store }

// inWriter runs fn in the writer's turn, alone, in a transaction of its
// own. Compaction changes chunks only, never a build's row, so the writer
// keeps its memory of build rows across it; a read commits no frames.
func (l compactLog) inWriter(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return l.s.Q.Do(ctx, &request{Alone: true, Op: &op{Bulk: fn, X: opX{compact: true}}})
}

// piecesPerRead bounds the chunks one of Pieces' reads lists, so that a
// build of many chunks does not hold the writer for long.
const piecesPerRead = 1024

func (l compactLog) Finished(ctx context.Context, limit int) ([]string, error) {
	rows, err := l.s.r.QueryContext(ctx, `SELECT id FROM builds WHERE finished_at IS NOT NULL AND compacted = 0
		ORDER BY finished_at, id LIMIT ?`, limit)
	if err != nil {
		return nil, err
	}
	return collect(rows)
}

func collect(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// Pieces leaves out the raw chunks a segment covers (leftovers, see
// Swap), which are not the log's pieces any more.
func (l compactLog) Pieces(ctx context.Context, id string) ([]segment.Piece, error) {
	var out []segment.Piece
	covered := int64(0) // the offset after the last piece listed
	for from := int64(0); ; {
		n := 0
		err := l.inWriter(ctx, func(ctx context.Context, tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx, `SELECT first_offset, count, coalesce(size, length(data)), codec FROM chunks
				WHERE build_id = ? AND first_offset >= ? ORDER BY first_offset LIMIT ?`, id, from, piecesPerRead)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var first, count, size, codec int64
				if err := rows.Scan(&first, &count, &size, &codec); err != nil {
					return err
				}
				from, n = first+1, n+1
				if first < covered {
					continue
				}
				out = append(out, segment.Piece{First: uint64(first), Count: int(count), Size: int(size), Codec: int(codec)})
				covered = first + count
			}
			return rows.Err()
		})
		if err != nil || n < piecesPerRead {
			return out, err
		}
	}
}

// Raw's range is one planned segment, about segment.Target bytes.
func (l compactLog) Raw(ctx context.Context, id string, first, end uint64, fn func(segment.Chunk)) error {
	return l.inWriter(ctx, func(ctx context.Context, tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT first_offset, count, terminal, hash, data FROM chunks
			WHERE build_id = ? AND first_offset >= ? AND first_offset < ? AND codec = 0 ORDER BY first_offset`,
			id, int64(first), int64(end))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				off, count, terminal int64
				hash, data           []byte
			)
			if err := rows.Scan(&off, &count, &terminal, &hash, &data); err != nil {
				return err
			}
			fn(segment.Chunk{First: uint64(off), Count: int(count), Terminal: terminal != 0, Hash: hash, Data: data})
		}
		return rows.Err()
	})
}

// Swap runs as one bulk transaction of the writer, alone in its group.
func (l compactLog) Swap(ctx context.Context, id string, finished bool, segs []segment.Written) error {
	return l.inWriter(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, seg := range segs {
			var n, count int64
			if err := tx.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(count), 0) FROM chunks
				WHERE build_id = ? AND first_offset >= ? AND first_offset < ? AND codec = 0`,
				id, int64(seg.First), int64(seg.End)).Scan(&n, &count); err != nil {
				return err
			}
			if int(n) != seg.Pieces || count != seg.Count {
				return segment.ErrStale
			}
			// Only the chunk whose offset the segment takes goes now. The
			// rest hold the very lines the segment holds, so a reader that
			// meets one still reads the log right, and readers skip those
			// a segment before them covers. Deleting them one build at a
			// time rewrote every page a build shares with the builds that
			// appended beside it; Collect deletes many builds' at once.
			if _, err := tx.ExecContext(ctx, `DELETE FROM chunks WHERE build_id = ? AND first_offset = ?`,
				id, int64(seg.First)); err != nil {
				return err
			}
			if seg.Pieces > 1 {
				if _, err := tx.ExecContext(ctx, `INSERT INTO leftovers (build_id, first_offset, end_offset) VALUES (?, ?, ?)`,
					id, int64(seg.First), int64(seg.End)); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO chunks (build_id, first_offset, count, terminal, data, codec, size)
				VALUES (?, ?, ?, ?, ?, ?, ?)`, id, int64(seg.First), seg.Count, b2i(seg.Terminal), seg.Data, segment.Zstd, seg.Size); err != nil {
				return err
			}
			for hs := seg.Hashes; len(hs) > 0; {
				n := rowCount(len(hs))
				args := make([]any, 0, 1+3*n)
				args = append(args, id)
				for _, h := range hs[:n] {
					args = append(args, int64(h.First), h.Count, h.Sum)
				}
				if _, err := tx.StmtContext(ctx, l.s.stmt(insertHashes(n))).ExecContext(ctx, args...); err != nil {
					return err
				}
				hs = hs[n:]
			}
		}
		if finished {
			// Also how a store from before compaction learns its finished
			// builds' kept bytes.
			if _, err := tx.ExecContext(ctx, `UPDATE builds SET compacted = 1,
				kept_bytes = (SELECT coalesce(sum(coalesce(size, length(data))), 0) FROM chunks c WHERE build_id = ?1
					AND NOT EXISTS (SELECT 1 FROM leftovers l WHERE l.build_id = ?1
						AND c.first_offset > l.first_offset AND c.first_offset < l.end_offset))
				WHERE id = ?1`, id); err != nil {
				return err
			}
		}
		return nil
	})
}

// collectPerTurn bounds the leftovers one writer turn deletes: in the
// worst case (no two on a page) that is as many pages rewritten.
const collectPerTurn = 1024

// Collect deletes the leftovers of every swap so far (see Swap), in rowid
// order, collectPerTurn at a time, each turn the writer's; then, once none
// is left, their ranges.
func (l compactLog) Collect(ctx context.Context) error {
	for {
		var n int64
		err := l.inWriter(ctx, func(ctx context.Context, tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, `DELETE FROM chunks WHERE rowid IN (
				SELECT c.rowid FROM leftovers l JOIN chunks c ON c.build_id = l.build_id
					AND c.first_offset > l.first_offset AND c.first_offset < l.end_offset AND c.codec = 0
				ORDER BY c.rowid LIMIT ?)`, collectPerTurn)
			if err != nil {
				return err
			}
			if n, err = res.RowsAffected(); err != nil || n > 0 {
				return err
			}
			_, err = tx.ExecContext(ctx, `DELETE FROM leftovers`)
			return err
		})
		if err != nil || n == 0 {
			return err
		}
	}
}
