package segment

import (
	"context"
	"errors"
)

// A Log is one store's side of compaction: its queries. Background.Pass
// and All are the plan both stores follow, written once, so the stores
// differ only in SQL.
type Log interface {
	// Finished returns up to limit finished builds not yet compacted,
	// oldest first.
	Finished(ctx context.Context, limit int) ([]string, error)
	// Pieces lists a build's chunks in offset order.
	Pieces(ctx context.Context, id string) ([]Piece, error)
	// Raw calls fn with each raw chunk of the build whose first offset is
	// in [first, end), in offset order.
	Raw(ctx context.Context, id string, first, end uint64, fn func(Chunk)) error
	// Swap replaces each segment's raw chunks by the segment, in one
	// transaction that also marks the build compacted when finished. It
	// returns ErrStale, having written nothing, when those chunks are no
	// longer as read or the build is gone.
	Swap(ctx context.Context, id string, finished bool, segs []Written) error
}

// A Collector is a Log whose swaps leave work for later: the SQLite store
// leaves the raw chunks a segment replaced in place and deletes them in
// Collect, many builds' at once. Background calls it whenever it has
// caught up, and All before it returns.
type Collector interface {
	Collect(ctx context.Context) error
}

// A Chunk is one stored raw chunk as compaction reads it.
type Chunk struct {
	First    uint64
	Count    int
	Terminal bool
	Hash     []byte // the batch hash an idempotent retry is answered from; nil for none
	Data     []byte
}

// Written is a segment ready to swap in for Pieces raw chunks holding
// Count lines in [First, End).
type Written struct {
	First, End uint64
	Pieces     int
	Count      int64
	Terminal   bool
	Size       int    // uncompressed bytes
	Data       []byte // Compress'd
	Hashes     []Hash // the replaced chunks' batch hashes, kept for retries
}

// Hash is a replaced chunk's batch hash.
type Hash struct {
	First uint64
	Count int
	Sum   []byte
}

// ErrStale ends a swap whose chunks changed since they were read (the
// size cap dropped some, retention deleted the build, another server
// compacted them): nothing is written, and a later pass plans again.
var ErrStale = errors.New("chunks changed while compacting")

// Pass compacts up to limit finished builds not yet compacted, oldest
// first, and the running builds that are due (see Appended), into
// segments of about target bytes, and returns how many builds it
// rewrote.
func (b *Background) Pass(ctx context.Context, l Log, target, limit int) (int, error) {
	finished, err := l.Finished(ctx, limit)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range finished {
		if _, err := compact(ctx, l, id, true, target); err != nil {
			return n, err
		}
		b.compacted(id)
		n++
	}
	for _, id := range b.due(2 * target) {
		did, err := compact(ctx, l, id, false, target)
		if err != nil {
			return n, err
		}
		// Also when nothing was done (the build is gone, or its chunks
		// changed): its count starts again rather than asking every pass.
		b.compacted(id)
		if did {
			n++
		}
	}
	return n, nil
}

// All compacts every log that is due now, in segments of about target
// bytes (0: Target), and returns how many builds it rewrote. A finished
// build's chunks all become segments; a running build's raw chunks do
// once two segments' worth has been appended since its last compaction,
// except the newest segment's worth.
func (b *Background) All(ctx context.Context, l Log, target int) (int, error) {
	if target <= 0 {
		target = Target
	}
	total := 0
	for {
		n, err := b.Pass(ctx, l, target, 64)
		total += n
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, collect(ctx, l)
		}
	}
}

// compact plans and writes one build's segments. Reading and compressing
// happen before the swap, outside the store's writer, which then only
// checks and replaces.
func compact(ctx context.Context, l Log, id string, finished bool, target int) (bool, error) {
	pieces, err := l.Pieces(ctx, id)
	if err != nil {
		return false, err
	}
	var segs []Written
	for _, run := range Plan(pieces, target, finished, target) {
		seg, err := read(ctx, l, id, pieces[run.From:run.To])
		if errors.Is(err, ErrStale) {
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
	err = l.Swap(ctx, id, finished, segs)
	if errors.Is(err, ErrStale) {
		return false, nil
	}
	return err == nil && len(segs) > 0, err
}

// read gathers pieces' raw chunks and compresses their lines as one
// segment, keeping their batch hashes.
func read(ctx context.Context, l Log, id string, pieces []Piece) (Written, error) {
	seg := Written{First: pieces[0].First, End: pieces[len(pieces)-1].End(), Pieces: len(pieces)}
	var raw []byte
	n := 0
	err := l.Raw(ctx, id, seg.First, seg.End, func(c Chunk) {
		raw = append(raw, c.Data...)
		seg.Count += int64(c.Count)
		seg.Terminal = c.Terminal
		if len(c.Hash) > 0 {
			seg.Hashes = append(seg.Hashes, Hash{First: c.First, Count: c.Count, Sum: c.Hash})
		}
		n++
	})
	if err != nil {
		return seg, err
	}
	if n != len(pieces) {
		return seg, ErrStale
	}
	seg.Size = len(raw)
	seg.Data = Compress(raw)
	return seg, nil
}

// collect runs l's Collect, if it has one.
func collect(ctx context.Context, l Log) error {
	if c, ok := l.(Collector); ok {
		return c.Collect(ctx)
	}
	return nil
}
