package bench

import (
	"math/rand/v2"
	"strconv"
	"time"

	"buildlog/internal/wire"
)

// A typical build log line: what apt, pip, npm and a builder print. The
// producer's JSON of one entry averages about 150 bytes.
var (
	messages = []string{
		"Get:12 http://deb.debian.org/debian bookworm/main amd64 libssl3 amd64 3.0.15-1 [2025 kB]",
		"Collecting numpy==1.26.4 (from -r requirements.txt (line 3))",
		"added 1432 packages, and audited 1433 packages in 31s",
		"Step 4/12 : RUN npm ci --omit=dev",
		"Setting up ca-certificates (20230311) ...",
		"  Downloading numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl (18.3 MB)",
		"Successfully installed requests-2.32.3 urllib3-2.2.2",
		"npm warn deprecated inflight@1.0.6: This module is not supported",
		"Unpacking libc6-dev:amd64 (2.36-9+deb12u7) ...",
		"layer sha256:4f4fb700ef54 pushed (12.4 MB in 1.8s)",
	}
	phases  = []string{"install", "compile", "snapshot", "step", "cache"}
	sources = []string{"apt", "pip", "npm", "builder", "stdout"}
	levels  = []string{"info", "info", "info", "debug", "warn"}
)

// gen makes producer entries as JSON.
type gen struct {
	rng *rand.Rand
	ts  time.Time
}

func newGen(seed uint64) *gen {
	return &gen{rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)), ts: time.Date(2026, 3, 17, 0, 0, 0, 0, time.UTC)}
}

// entry appends one entry as a producer sends it.
func (g *gen) entry(dst []byte) []byte { return g.entryWith(dst, "") }

// entryWith is entry with prefix put before the message text.
func (g *gen) entryWith(dst []byte, prefix string) []byte {
	g.ts = g.ts.Add(time.Duration(g.rng.IntN(5000)) * time.Microsecond)
	dst = append(dst, `{"timestamp":"`...)
	dst = g.ts.AppendFormat(dst, "2006-01-02T15:04:05.000000Z07:00")
	dst = append(dst, `","level":"`...)
	dst = append(dst, levels[g.rng.IntN(len(levels))]...)
	dst = append(dst, `","phase":"`...)
	dst = append(dst, phases[g.rng.IntN(len(phases))]...)
	dst = append(dst, `","source":"`...)
	dst = append(dst, sources[g.rng.IntN(len(sources))]...)
	dst = append(dst, `","message":`...)
	dst = wire.AppendString(dst, prefix+messages[g.rng.IntN(len(messages))])
	return append(dst, '}')
}

// sentMark starts the message of a fan-out entry: the producer's clock
// when it sent the entry, which each follower subtracts from its own clock
// on delivery (same machine, same clock) to get the append→delivery time.
const sentMark = "bench t="

// liveBatch is a JSON array of n entries stamped with sent.
func (g *gen) liveBatch(n int, sent time.Time) []byte {
	prefix := sentMark + strconv.FormatInt(sent.UnixNano(), 10) + " "
	b := make([]byte, 0, n*200)
	b = append(b, '[')
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = g.entryWith(b, prefix)
	}
	return append(b, ']')
}

// batch returns a JSON array of n entries, with first_offset when first ≥ 0.
func (g *gen) batch(n int, first int64) []byte {
	b := make([]byte, 0, n*170+64)
	if first >= 0 {
		b = append(b, `{"first_offset":`...)
		b = strconv.AppendInt(b, first, 10)
		b = append(b, `,"entries":`...)
	}
	b = append(b, '[')
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = g.entry(b)
	}
	b = append(b, ']')
	if first >= 0 {
		b = append(b, '}')
	}
	return b
}
