package buildlog

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
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

// NoticeEntry is the omission notice a read meets at offset from, which
// must lie in the range: one warning entry, stored at offset o.To (see
// internal/wire's Notice), standing for offsets from through o.To. When
// from is past the range's start, the part's bytes are estimated in
// proportion to its entries (the store keeps the range's totals, not each
// dropped entry's size).
func (o *Omitted) NoticeEntry(from uint64, limit int64) Entry {
	if from < o.From {
		from = o.From
	}
	entries := o.To - from + 1
	bytes := o.Bytes
	if from > o.From && o.Entries > 0 {
		bytes = uint64(float64(o.Bytes) * float64(entries) / float64(o.Entries))
	}
	meta, _ := json.Marshal(struct {
		From    uint64 `json:"omitted_from"`
		To      uint64 `json:"omitted_to"`
		Entries uint64 `json:"omitted_entries"`
		Bytes   uint64 `json:"omitted_bytes"`
	}{from, o.To, entries, bytes})
	msg := fmt.Sprintf("… %s lines (%s) omitted: the log is over its %s limit; its first lines and its most recent ones are kept …",
		Thousands(entries), HumanBytes(bytes), HumanBytes(uint64(limit)))
	e := Entry{Timestamp: o.Timestamp, Kind: KindWarning, Level: LevelWarn, Message: msg, ResultMetadata: meta}
	if e.Timestamp == "" {
		e.Timestamp = Timestamp(time.Unix(0, 0))
	}
	return e
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
