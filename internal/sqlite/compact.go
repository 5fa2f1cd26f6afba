package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"buildlog/internal/segment"
)

// StartCompactor compacts logs in the background (see Compact), every
// interval and soon after a build finishes, until Close.
func (s *Store) StartCompactor(interval time.Duration) {
	s.compactor.Start(interval, func(ctx context.Context) (bool, error) {
		n, err := s.compactPass(ctx, segment.Target, 8)
		return n > 0, err
	})
}

// Compact compacts every log that is due now, segments of about target
// bytes (0: segment.Target), and returns how many builds it rewrote. A
// finished build's chunks all become segments; a running build's raw
// chunks do once they hold two segments' worth, except the newest
// segment's worth. Each build's swap is one transaction of the writer, so
// it never races an append and a crash leaves the log as before or after.
func (s *Store) Compact(ctx context.Context, target int) (int, error) {
	if target <= 0 {
		target = segment.Target
	}
	total := 0
	for {
		n, err := s.compactPass(ctx, target, 64)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

// compactPass compacts up to limit finished builds not yet compacted,
// oldest first, and the running builds that are due.
func (s *Store) compactPass(ctx context.Context, target, limit int) (int, error) {
	ids := map[string]bool{}
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM builds WHERE finished_at IS NOT NULL AND compacted = 0
		ORDER BY finished_at, id LIMIT ?`, limit)
	if err != nil {
		return 0, wrap("compact", err)
	}
	if err := collect(rows, func(id string) { ids[id] = true }); err != nil {
		return 0, wrap("compact", err)
	}
	rows, err = s.r.QueryContext(ctx, `SELECT c.build_id FROM builds b JOIN chunks c ON c.build_id = b.id
		WHERE b.finished_at IS NULL AND c.codec = 0
		GROUP BY c.build_id HAVING sum(length(c.data)) >= ?`, 2*target)
	if err != nil {
		return 0, wrap("compact", err)
	}
	var running []string
	if err := collect(rows, func(id string) { running = append(running, id) }); err != nil {
		return 0, wrap("compact", err)
	}
	n := 0
	for id := range ids {
		if _, err := s.compact(ctx, id, true, target); err != nil {
			return n, wrap("compact", err)
		}
		n++
	}
	for _, id := range running {
		did, err := s.compact(ctx, id, false, target)
		if err != nil {
			return n, wrap("compact", err)
		}
		if did {
			n++
		}
	}
	return n, nil
}

func collect(rows *sql.Rows, fn func(string)) error {
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		fn(id)
	}
	return rows.Err()
}

// errStale ends a swap whose chunks changed since they were read (the
// size cap dropped some, or retention deleted the build): nothing is
// written, and a later pass plans again.
var errStale = errors.New("chunks changed while compacting")

type segmentRow struct {
	first, end int64
	pieces     int
	count      int64
	terminal   bool
	size       int
	data       []byte
	hashFirsts []int64
	hashCounts []int64
	hashes     [][]byte
}

// compact plans and writes one build's segments. Reading and compressing
// happen outside the writer, on the read pool; only the swap goes through
// it, as one bulk transaction that first checks the chunks it replaces are
// still there as read.
func (s *Store) compact(ctx context.Context, id string, finished bool, target int) (done bool, err error) {
	pieces, err := s.pieces(ctx, id)
	if err != nil {
		return false, err
	}
	runs := segment.Plan(pieces, target, finished, target)
	var segs []segmentRow
	for _, run := range runs {
		seg, err := s.buildSegment(ctx, id, pieces[run.From:run.To])
		if errors.Is(err, errStale) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		segs = append(segs, seg)
	}
	if len(segs) == 0 && !finished {
		return false, nil
	}
	r := &request{Alone: true, Op: &op{compact: true, bulk: func(ctx context.Context, tx *sql.Tx) error {
		for _, seg := range segs {
			var n, count int64
			if err := tx.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(count), 0) FROM chunks
				WHERE build_id = ? AND first_offset >= ? AND first_offset < ? AND codec = 0`,
				id, seg.first, seg.end).Scan(&n, &count); err != nil {
				return err
			}
			if int(n) != seg.pieces || count != seg.count {
				return errStale
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM chunks WHERE build_id = ? AND first_offset >= ? AND first_offset < ?`,
				id, seg.first, seg.end); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO chunks (build_id, first_offset, count, terminal, data, codec, size)
				VALUES (?, ?, ?, ?, ?, ?, ?)`, id, seg.first, seg.count, b2i(seg.terminal), seg.data, segment.Zstd, seg.size); err != nil {
				return err
			}
			for i := range seg.hashes {
				if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO batch_hashes (build_id, first_offset, count, hash)
					VALUES (?, ?, ?, ?)`, id, seg.hashFirsts[i], seg.hashCounts[i], seg.hashes[i]); err != nil {
					return err
				}
			}
		}
		if finished {
			// Also how a store from before compaction learns its finished
			// builds' kept bytes.
			if _, err := tx.ExecContext(ctx, `UPDATE builds SET compacted = 1,
				kept_bytes = (SELECT coalesce(sum(coalesce(size, length(data))), 0) FROM chunks WHERE build_id = ?1)
				WHERE id = ?1`, id); err != nil {
				return err
			}
		}
		return nil
	}}}
	err = s.q.Do(ctx, r)
	if errors.Is(err, errStale) {
		return false, nil
	}
	return err == nil && len(segs) > 0, err
}

func (s *Store) pieces(ctx context.Context, id string) ([]segment.Piece, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT first_offset, count, coalesce(size, length(data)), codec FROM chunks
		WHERE build_id = ? ORDER BY first_offset`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []segment.Piece
	for rows.Next() {
		var first, count, size, codec int64
		if err := rows.Scan(&first, &count, &size, &codec); err != nil {
			return nil, err
		}
		out = append(out, segment.Piece{First: uint64(first), Count: int(count), Size: int(size), Codec: int(codec)})
	}
	return out, rows.Err()
}

// buildSegment reads pieces' chunks (all raw) and compresses their lines
// as one segment, keeping their batch hashes.
func (s *Store) buildSegment(ctx context.Context, id string, pieces []segment.Piece) (segmentRow, error) {
	first, last := pieces[0], pieces[len(pieces)-1]
	seg := segmentRow{first: int64(first.First), end: int64(last.End()), pieces: len(pieces)}
	rows, err := s.r.QueryContext(ctx, `SELECT first_offset, count, terminal, hash, data FROM chunks
		WHERE build_id = ? AND first_offset >= ? AND first_offset < ? AND codec = 0 ORDER BY first_offset`,
		id, seg.first, seg.end)
	if err != nil {
		return seg, err
	}
	defer rows.Close()
	var raw []byte
	n := 0
	for rows.Next() {
		var (
			off, count, terminal int64
			hash, data           []byte
		)
		if err := rows.Scan(&off, &count, &terminal, &hash, &data); err != nil {
			return seg, err
		}
		raw = append(raw, data...)
		seg.count += count
		seg.terminal = terminal != 0
		if len(hash) > 0 {
			seg.hashFirsts, seg.hashCounts, seg.hashes = append(seg.hashFirsts, off), append(seg.hashCounts, count), append(seg.hashes, hash)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return seg, err
	}
	if n != len(pieces) {
		return seg, errStale
	}
	seg.size = len(raw)
	seg.data = segment.Compress(raw)
	return seg, nil
}
