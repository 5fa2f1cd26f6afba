package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"buildlog/internal/segment"
)

// StartCompactor compacts logs in the background (see Compact), every
// interval and soon after a build finishes, until Close. Several servers
// may run it on one database: each swap locks its build's row.
func (s *Store) StartCompactor(interval time.Duration) {
	s.compactor.Start(interval, func(ctx context.Context) (bool, error) {
		n, err := s.compactPass(ctx, segment.Target, 8)
		return n > 0, err
	})
}

// Compact compacts every log that is due now, in segments of about target
// bytes (0: segment.Target), and returns how many builds it rewrote. A
// finished build's chunks all become segments; a running build's raw
// chunks do once they hold two segments' worth, except the newest
// segment's worth. Each build's swap is one transaction that locks the
// build's row, as appends do, so it never races one, and a crash leaves
// the log as it was before or after.
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

func (s *Store) compactPass(ctx context.Context, target, limit int) (int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT id FROM builds WHERE finished_at IS NOT NULL AND NOT compacted
		ORDER BY finished_at LIMIT $1`, limit)
	if err != nil {
		return 0, wrap("compact", err)
	}
	finished, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, wrap("compact", err)
	}
	rows, err = s.pool.Query(ctx, `SELECT c.build_id FROM builds b JOIN chunks c ON c.build_id = b.id
		WHERE b.finished_at IS NULL AND c.codec = 0
		GROUP BY c.build_id HAVING sum(octet_length(c.data)) >= $1`, 2*target)
	if err != nil {
		return 0, wrap("compact", err)
	}
	running, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, wrap("compact", err)
	}
	n := 0
	for _, id := range finished {
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

// errStale ends a swap whose chunks changed since they were read (the
// size cap dropped some, retention deleted the build, another server
// compacted them): nothing is written, and a later pass plans again.
var errStale = errors.New("chunks changed while compacting")

type segmentRow struct {
	first, end int64
	pieces     int
	count      int64
	terminal   bool
	size       int
	data       []byte
	hashFirsts []int64
	hashCounts []int32
	hashes     [][]byte
}

// compact plans and writes one build's segments. Reading and compressing
// happen outside the writer; only the swap goes through it, as one bulk
// transaction that locks the build's row and checks the chunks it
// replaces are still there as read.
func (s *Store) compact(ctx context.Context, id string, finished bool, target int) (bool, error) {
	pieces, err := s.pieces(ctx, id)
	if err != nil {
		return false, err
	}
	var segs []segmentRow
	for _, run := range segment.Plan(pieces, target, finished, target) {
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
	r := &request{Alone: true, Op: &op{bulk: func(ctx context.Context, tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM builds WHERE id = $1 FOR UPDATE`, id).Scan(&one); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return errStale
			}
			return err
		}
		for _, seg := range segs {
			var n, count int64
			if err := tx.QueryRow(ctx, `SELECT count(*), coalesce(sum(count), 0) FROM chunks
				WHERE build_id = $1 AND first_offset >= $2 AND first_offset < $3 AND codec = 0`,
				id, seg.first, seg.end).Scan(&n, &count); err != nil {
				return err
			}
			if int(n) != seg.pieces || count != seg.count {
				return errStale
			}
			b := &pgx.Batch{}
			b.Queue(`DELETE FROM chunks WHERE build_id = $1 AND first_offset >= $2 AND first_offset < $3`, id, seg.first, seg.end)
			b.Queue(`INSERT INTO chunks (build_id, first_offset, count, terminal, data, codec, size)
				VALUES ($1, $2, $3, $4, $5, $6, $7)`, id, seg.first, seg.count, seg.terminal, seg.data, int16(segment.Zstd), int32(seg.size))
			if len(seg.hashes) > 0 {
				b.Queue(`INSERT INTO batch_hashes (build_id, first_offset, count, hash)
					SELECT $1, * FROM unnest($2::bigint[], $3::int[], $4::bytea[]) ON CONFLICT DO NOTHING`,
					id, seg.hashFirsts, seg.hashCounts, seg.hashes)
			}
			if err := tx.SendBatch(ctx, b).Close(); err != nil {
				return err
			}
		}
		if finished {
			// Also how a database from before compaction learns its
			// finished builds' kept bytes.
			if _, err := tx.Exec(ctx, `UPDATE builds SET compacted = true,
				kept_bytes = (SELECT coalesce(sum(coalesce(size, octet_length(data))), 0) FROM chunks WHERE build_id = $1)
				WHERE id = $1`, id); err != nil {
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
	rows, err := s.pool.Query(ctx, `SELECT first_offset, count, coalesce(size, octet_length(data)), codec FROM chunks
		WHERE build_id = $1 ORDER BY first_offset`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []segment.Piece
	for rows.Next() {
		var (
			first int64
			count int32
			size  int64
			codec int16
		)
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
	rows, err := s.pool.Query(ctx, `SELECT first_offset, count, terminal, hash, data FROM chunks
		WHERE build_id = $1 AND first_offset >= $2 AND first_offset < $3 AND codec = 0 ORDER BY first_offset`,
		id, seg.first, seg.end)
	if err != nil {
		return seg, err
	}
	defer rows.Close()
	var raw []byte
	n := 0
	for rows.Next() {
		var (
			off      int64
			count    int32
			terminal bool
			hash     []byte
			data     []byte
		)
		if err := rows.Scan(&off, &count, &terminal, &hash, &data); err != nil {
			return seg, err
		}
		raw = append(raw, data...)
		seg.count += int64(count)
		seg.terminal = terminal
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
