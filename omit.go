package buildlog

import (
	"strconv"
	"strings"
)

// LogCap is the per-build log size cap: a log past MaxBytes (counted as
// its canonical lines, newline included, before compression) keeps its
// first HeadBytes and its most recent entries, and the entries between
// are dropped, whole stored chunks at a time. MaxBytes 0 is no cap.
type LogCap struct {
	MaxBytes  int64
	HeadBytes int64
}

// DefaultLogCap is the flags' defaults: 100 MiB, of which the first MiB
// is always kept.
var DefaultLogCap = LogCap{MaxBytes: 100 << 20, HeadBytes: 1 << 20}

// Omitted is the range of a build's log dropped by the size cap:
// offsets From through To, Entries of them, Bytes of canonical lines.
type Omitted struct {
	From    uint64 `json:"from"`
	To      uint64 `json:"to"`
	Entries uint64 `json:"entries"`
	Bytes   uint64 `json:"bytes"`
	// Timestamp is the last dropped entry's, which the notice carries.
	Timestamp string `json:"-"`
}

// Thousands formats n with commas: 18,204.
func Thousands(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// HumanBytes formats n in binary units with one decimal: 96.1 MiB.
func HumanBytes(n uint64) string {
	units := []string{"KiB", "MiB", "GiB", "TiB"}
	if n < 1024 {
		return strconv.FormatUint(n, 10) + " B"
	}
	v, u := float64(n)/1024, 0
	for v >= 1024 && u < len(units)-1 {
		v, u = v/1024, u+1
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + units[u]
}
