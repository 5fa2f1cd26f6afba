// Package segment holds what both stores share about compacted logs: the
// codec of stored chunk data and how a build's small chunks are grouped
// into the large segments that replace them.
//
// Appends store each batch as it came, uncompressed, so an append costs
// only a copy. Compaction later rewrites runs of those chunks as one
// segment each: the runs' lines concatenated, compressed with zstd. A
// segment is a chunk like any other to readers (ReadLog decompresses it),
// only larger: they trim it with Chunk.From.
package segment

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Codecs of stored chunk data.
const (
	Raw  = 0 // the canonical lines as readers get them
	Zstd = 1 // the canonical lines, one zstd frame
)

// Target is the uncompressed size compaction aims a segment at. Measured
// on real build output (apt, dpkg, go build -x, npm; see
// docs/PERFORMANCE.md), zstd at SpeedBetterCompression over canonical
// lines gave 0.084 of their size in 64 KiB segments, 0.077 in 256 KiB,
// 0.076 in 1 MiB and 0.076 in 4 MiB: past 1 MiB size buys nothing, and a
// 1 MiB segment is one read page, decompressed once per page.
const Target = 1 << 20

// level was chosen by the same measurement: SpeedBetterCompression was
// 7% smaller than the default level, at 53 MB/s compressing (compaction
// runs in the background) and over 600 MB/s decompressing.
const level = zstd.SpeedBetterCompression

var (
	encOnce sync.Once
	enc     *zstd.Encoder
	dec     *zstd.Decoder
)

func codecs() {
	encOnce.Do(func() {
		var err error
		// EncodeAll and DecodeAll are safe for concurrent use.
		if enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1)); err != nil {
			panic(err)
		}
		if dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(1<<30)); err != nil {
			panic(err)
		}
	})
}

// decodeSlack is the spare capacity Decode gives its output: zstd's
// compressedBlockOverAlloc (16) with room to spare.
const decodeSlack = 64

// Compress returns raw as one zstd frame.
func Compress(raw []byte) []byte {
	codecs()
	return enc.EncodeAll(raw, make([]byte, 0, len(raw)/8+64))
}

// Decode returns the canonical lines data holds under codec; size, when
// known (> 0), is their length, so the output is allocated once.
func Decode(codec int, data []byte, size int) ([]byte, error) {
	switch codec {
	case Raw:
		return data, nil
	case Zstd:
		codecs()
		// The slack past size lets the decoder take its faster copies,
		// which may write up to 16 bytes past the end of a match; without
		// it every block is decoded with the bounds-exact ones (about 10%
		// slower here, see docs/PERFORMANCE.md).
		out, err := dec.DecodeAll(data, make([]byte, 0, max(size, 0)+decodeSlack))
		if err != nil {
			return nil, fmt.Errorf("segment: decompress: %w", err)
		}
		if size > 0 && len(out) != size {
			return nil, fmt.Errorf("segment: decompressed %d bytes, want %d", len(out), size)
		}
		return out, nil
	}
	return nil, fmt.Errorf("segment: unknown codec %d", codec)
}

// Piece is a stored chunk as compaction sees it.
type Piece struct {
	First uint64
	Count int
	Size  int // uncompressed bytes
	Codec int
}

// End is the offset after the piece.
func (p Piece) End() uint64 { return p.First + uint64(p.Count) }

// Run is pieces[From:To], to be rewritten as one segment.
type Run struct{ From, To int }

// Plan groups pieces (in offset order) into runs of contiguous raw chunks
// of about target bytes each. A run never spans a gap (the size cap's
// dropped range) nor an already compressed segment. With all set (a
// finished build) the last, short run is planned too; otherwise only runs
// that reached target are, and the newest keep bytes of raw chunks are
// left alone, so the chunks a live build's producer may still be retrying
// stay as they were appended.
func Plan(pieces []Piece, target int, all bool, keep int) []Run {
	limit := len(pieces)
	if !all {
		tail := 0
		for limit > 0 && tail < keep {
			limit--
			tail += pieces[limit].Size
		}
	}
	var runs []Run
	start, size := -1, 0
	flush := func(end int, complete bool) {
		if start >= 0 && (complete || all) && (end-start > 1 || all) {
			runs = append(runs, Run{start, end})
		}
		start, size = -1, 0
	}
	for i := 0; i < limit; i++ {
		p := pieces[i]
		if p.Codec != Raw {
			flush(i, false)
			continue
		}
		if start >= 0 && pieces[i-1].End() != p.First {
			flush(i, false)
		}
		if start < 0 {
			start = i
		}
		size += p.Size
		if size >= target {
			flush(i+1, true)
		}
	}
	flush(limit, false)
	return runs
}

// Background runs a store's compaction passes on a goroutine of its own:
// one at start, then every interval, and at once when kicked (a build
// finished). The zero value is stopped; Stop waits for a pass under way
// to end, so a store stops it before it closes its writer.
type Background struct {
	mu     sync.Mutex
	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	// raw is, per running build, the raw bytes this process's writer
	// committed to it since its last compaction (Appended). It is what
	// makes a running build due: asking the store instead summed every
	// raw chunk of every running build on each pass, measured at 19% of
	// the server's CPU with 256 builds appending.
	rawMu sync.Mutex
	raw   map[string]int64
}

// Appended notes n raw bytes committed to running build id. A build is
// due once this process has appended two segments' worth to it since its
// last compaction: after a restart, or on a build other servers append to
// as well, its older raw chunks wait for that, or for its finish, which
// compacts everything.
func (b *Background) Appended(id string, n int) {
	b.rawMu.Lock()
	defer b.rawMu.Unlock()
	if b.raw == nil {
		b.raw = map[string]int64{}
	}
	b.raw[id] += int64(n)
}

// due returns the running builds with at least min raw bytes appended.
func (b *Background) due(min int) []string {
	b.rawMu.Lock()
	defer b.rawMu.Unlock()
	var ids []string
	for id, n := range b.raw {
		if n >= int64(min) {
			ids = append(ids, id)
		}
	}
	return ids
}

// compacted starts build id's count again.
func (b *Background) compacted(id string) {
	b.rawMu.Lock()
	defer b.rawMu.Unlock()
	delete(b.raw, id)
}

// collectEvery is how many background passes in a row that did work may
// run before their leftovers are collected anyway (see Collector):
// collecting many builds' together is what makes it cheap, and this
// bounds how much waits.
const collectEvery = 32

// passLimit bounds the finished builds one background pass compacts; a
// pass that did work is followed by another at once, so a backlog is
// still worked off without waiting for the interval.
const passLimit = 8

// Start runs passes over l (see Pass) until Stop. A pass that rewrote a
// build is followed by another at once, as there may be more to do. Its
// errors are left to the next pass: a failed compaction changes nothing.
func (b *Background) Start(interval time.Duration, l Log) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.kick, b.cancel, b.done = make(chan struct{}, 1), cancel, make(chan struct{})
	go func() {
		defer close(b.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			// The first pass runs at once: a server restarted after a
			// crash goes on with the compaction it had under way rather
			// than an interval later.
			for passes := 1; ctx.Err() == nil; passes++ {
				n, err := b.Pass(ctx, l, Target, passLimit)
				if err != nil {
					break
				}
				// What the passes left for later goes once they have
				// caught up, all of it together, or every collectEvery
				// passes if they do not. An error is left to the next
				// time.
				if n == 0 || passes%collectEvery == 0 {
					collect(ctx, l)
				}
				if n == 0 {
					break
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-b.kick:
			}
		}
	}()
}

// Kick asks for a pass soon; it never blocks.
func (b *Background) Kick() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.kick != nil {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

// Stop ends the goroutine and waits for it.
func (b *Background) Stop() {
	b.mu.Lock()
	cancel, done := b.cancel, b.done
	b.cancel = nil
	b.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}
