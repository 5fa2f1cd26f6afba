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
	s.compactor.Start(interval, compactLog{s})
}

// Compact compacts every log that is due now (see segment.Background.All), in
// segments of about target bytes (0: segment.Target), and returns how
// many builds it rewrote. Each build's swap is one transaction that locks
// the build's row, as appends do, so it never races one, and a crash
// leaves the log as it was before or after.
func (s *Store) Compact(ctx context.Context, target int) (int, error) {
	n, err := s.compactor.All(ctx, compactLog{s}, target)
	if err != nil {
		return n, wrap("compact", err)
	}
	return n, nil
}

// compactLog is the store's side of segment.Log: reads on the pool, the
// swap through the writer.
type compactLog struct{ s *Store }

func (l compactLog) Finished(ctx context.Context, limit int) ([]string, error) {
	ctx, cancel := l.s.bound(ctx)
	defer cancel()
	rows, err := l.s.pool.Query(ctx, `SELECT id FROM builds WHERE finished_at IS NOT NULL AND NOT compacted
		ORDER BY finished_at LIMIT $1`, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func (l compactLog) Pieces(ctx context.Context, id string) ([]segment.Piece, error) {
	ctx, cancel := l.s.bound(ctx)
	defer cancel()
	rows, err := l.s.pool.Query(ctx, `SELECT first_offset, count, coalesce(size, octet_length(data)), codec FROM chunks
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

func (l compactLog) Raw(ctx context.Context, id string, first, end uint64, fn func(segment.Chunk)) error {
	ctx, cancel := l.s.bound(ctx)
	defer cancel()
	rows, err := l.s.pool.Query(ctx, `SELECT first_offset, count, terminal, hash, data FROM chunks
		WHERE build_id = $1 AND first_offset >= $2 AND first_offset < $3 AND codec = 0 ORDER BY first_offset`,
		id, int64(first), int64(end))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			off        int64
			count      int32
			terminal   bool
			hash, data []byte
		)
		if err := rows.Scan(&off, &count, &terminal, &hash, &data); err != nil {
			return err
		}
		fn(segment.Chunk{First: uint64(off), Count: int(count), Terminal: terminal, Hash: hash, Data: data})
	}
	return rows.Err()
}

// Swap runs as one bulk transaction of the writer that first locks the
// build's row, so appends and other servers' compactors wait for it.
func (l compactLog) Swap(ctx context.Context, id string, finished bool, segs []segment.Written) error {
	return l.s.Q.Do(ctx, &request{Alone: true, Op: &op{Bulk: func(ctx context.Context, tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM builds WHERE id = $1 FOR UPDATE`, id).Scan(&one); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return segment.ErrStale
			}
			return err
		}
		for _, seg := range segs {
			var n, count int64
			if err := tx.QueryRow(ctx, `SELECT count(*), coalesce(sum(count), 0) FROM chunks
				WHERE build_id = $1 AND first_offset >= $2 AND first_offset < $3 AND codec = 0`,
				id, int64(seg.First), int64(seg.End)).Scan(&n, &count); err != nil {
				return err
			}
			if int(n) != seg.Pieces || count != seg.Count {
				return segment.ErrStale
			}
			b := &pgx.Batch{}
			b.Queue(`DELETE FROM chunks WHERE build_id = $1 AND first_offset >= $2 AND first_offset < $3`, id, int64(seg.First), int64(seg.End))
			b.Queue(`INSERT INTO chunks (build_id, first_offset, count, terminal, data, codec, size)
				VALUES ($1, $2, $3, $4, $5, $6, $7)`, id, int64(seg.First), seg.Count, seg.Terminal, seg.Data, int16(segment.Zstd), int32(seg.Size))
			if len(seg.Hashes) > 0 {
				firsts, counts, sums := make([]int64, len(seg.Hashes)), make([]int32, len(seg.Hashes)), make([][]byte, len(seg.Hashes))
				for i, h := range seg.Hashes {
					firsts[i], counts[i], sums[i] = int64(h.First), int32(h.Count), h.Sum
				}
				b.Queue(`INSERT INTO batch_hashes (build_id, first_offset, count, hash)
					SELECT $1, * FROM unnest($2::bigint[], $3::int[], $4::bytea[]) ON CONFLICT DO NOTHING`,
					id, firsts, counts, sums)
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
	}}})
}
