package wire

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"strconv"
	"time"
	"unicode/utf8"

	"buildlog"
)

// AppendEntry appends e's canonical JSON, on one line, with no newline.
func AppendEntry(dst []byte, e *buildlog.Entry) []byte {
	dst = AppendEntryHead(dst, e.BuildID, e.TemplateID, e.Offset)
	return AppendEntryTail(dst, e)
}

// AppendEntryHead appends the server-set prefix of an entry's canonical JSON;
// AppendEntryTail completes it. The split lets the per-entry work happen
// before a store knows the offset, leaving only a copy under its lock.
func AppendEntryHead(dst []byte, buildID, templateID string, offset uint64) []byte {
	dst = append(dst, `{"build_id":`...)
	dst = appendString(dst, buildID)
	dst = append(dst, `,"template_id":`...)
	dst = appendString(dst, templateID)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendUint(dst, offset, 10)
	return dst
}

// AppendEntryTail appends everything after the offset, closing brace included.
func AppendEntryTail(dst []byte, e *buildlog.Entry) []byte {
	dst = appendStr(dst, `,"timestamp":`, e.Timestamp)
	dst = appendStr(dst, `,"kind":`, string(e.Kind))
	dst = appendStr(dst, `,"level":`, string(e.Level))
	dst = appendStr(dst, `,"message":`, e.Message)
	return appendOptional(dst, e)
}

// appendOptional appends the fields a line leaves out when they are
// unset, in the table's order, and the closing brace.
func appendOptional(dst []byte, e *buildlog.Entry) []byte {
	dst = appendOptStr(dst, `,"phase":`, e.Phase)
	dst = appendPtrStr(dst, `,"source":`, e.Source)
	dst = appendInt(dst, `,"step_index":`, e.StepIndex)
	dst = appendInt(dst, `,"total_steps":`, e.TotalSteps)
	dst = appendInt(dst, `,"attempt":`, e.Attempt)
	dst = appendInt(dst, `,"max_attempts":`, e.MaxAttempts)
	dst = appendOptStr(dst, `,"cache_kind":`, e.CacheKind)
	dst = appendOptStr(dst, `,"cache_status":`, e.CacheStatus)
	dst = appendOptStr(dst, `,"cache_reason":`, e.CacheReason)
	dst = appendPtrStr(dst, `,"cache_subject":`, e.CacheSubject)
	dst = appendRaw(dst, `,"error_detail":`, e.ErrorDetail)
	dst = appendRaw(dst, `,"result":`, e.Result)
	dst = appendRaw(dst, `,"result_metadata":`, e.ResultMetadata)
	return append(dst, '}')
}

func appendStr(dst []byte, key, v string) []byte {
	return appendString(append(dst, key...), v)
}

func appendOptStr(dst []byte, key, v string) []byte {
	if v == "" {
		return dst
	}
	return appendStr(dst, key, v)
}

func appendPtrStr(dst []byte, key string, v *string) []byte {
	if v == nil {
		return dst
	}
	return appendStr(dst, key, *v)
}

func appendInt(dst []byte, key string, v *int64) []byte {
	if v == nil {
		return dst
	}
	return strconv.AppendInt(append(dst, key...), *v, 10)
}

func appendRaw(dst []byte, key string, v json.RawMessage) []byte {
	if len(v) == 0 {
		return dst
	}
	return append(append(dst, key...), v...)
}

const hexDigits = "0123456789abcdef"

// plain8 reports whether all eight bytes of s (len(s) >= 8) are ASCII that
// a JSON string holds as it is: none below 0x20, no quote, no backslash.
// Once no byte has its high bit set, the borrow tests below are exact.
func plain8(s string) bool {
	v := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	below := (v - 0x20*ones) & ^v & highs // a byte < 0x20
	q := v ^ '"'*ones
	quote := (q - ones) & ^q & highs
	b := v ^ '\\'*ones
	backslash := (b - ones) & ^b & highs
	return (v&highs)|below|quote|backslash == 0
}

// appendString appends s as a JSON string. Control characters are escaped, so
// an entry never spans lines (SSE data lines and NDJSON depend on it); HTML
// characters are not, unlike encoding/json, since no output is HTML. Invalid
// UTF-8 becomes U+FFFD, as encoding/json does on decode.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	// Most of a log line is plain ASCII: it is skipped a word at a time.
	// A word that is not plain holds a byte that needs care within its
	// eight, so they are taken one at a time before words are tried again.
	next := 0
	for i := 0; i < len(s); {
		if i >= next {
			for i+8 <= len(s) && plain8(s[i:i+8]) {
				i += 8
			}
			if next = i + 8; i == len(s) {
				break
			}
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON but break JavaScript line parsing
		// in some consoles; escaping them costs nothing here.
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendString is the string encoder of the canonical line, for the
// other JSON the server builds by hand.
func AppendString(dst []byte, s string) []byte { return appendString(dst, s) }

// HashEntries fingerprints a batch as the producer sent it (after defaults,
// before timestamps are filled or secrets masked), so a retry can be told from
// a different batch at the same first_offset.
func HashEntries(entries []buildlog.Entry) []byte {
	h := sha256.New()
	var buf []byte
	for i := range entries {
		buf = AppendEntryTail(buf[:0], &entries[i])
		hashLine(h, buf)
	}
	return h.Sum(nil)
}

// HashTails is HashEntries of the entries tails were encoded from
// (Batch.Tails): the same fingerprint without encoding them again, for a
// batch whose every timestamp the producer gave and that masking did not
// change.
func HashTails(tails [][]byte) []byte {
	h := sha256.New()
	for _, t := range tails {
		hashLine(h, t)
	}
	return h.Sum(nil)
}

func hashLine(h hash.Hash, tail []byte) {
	h.Write(tail)
	h.Write(newline)
}

var newline = []byte{'\n'}

// NewBatch encodes entries for storage. Timestamps must be filled.
func NewBatch(entries []buildlog.Entry, firstOffset *uint64, hash []byte) *buildlog.Batch {
	b := &buildlog.Batch{Tails: make([][]byte, len(entries)), FirstOffset: firstOffset, Hash: hash}
	// Sized close to what a typical entry takes (~90 bytes besides its
	// strings) rather than generously: ingest allocates several times its
	// input, and the garbage, more than the work, was the cost (GC and the
	// runtime returning memory were ~20% of server CPU). An entry with many
	// escapes or optional fields only makes append grow the buffer.
	n := 0
	for i := range entries {
		e := &entries[i]
		n += 100 + len(e.Message) + len(e.Phase) + len(e.ErrorDetail) + len(e.Result) + len(e.ResultMetadata)
		if e.Source != nil {
			n += 12 + len(*e.Source)
		}
	}
	buf := make([]byte, 0, n)
	for i := range entries {
		start := len(buf)
		buf = AppendEntryTail(buf, &entries[i])
		b.Tails[i] = buf[start:len(buf):len(buf)]
		if entries[i].Phase != "" {
			b.LastPhase = entries[i].Phase
		}
	}
	return b
}

// EncodeBatch renders b as the chunk bytes readers are served: one
// canonical entry per line, each line ending in '\n', from offset first.
func EncodeBatch(b *buildlog.Batch, buildID, templateID string, first uint64) []byte {
	// Exact for ids that need no escaping (all valid ids): the head is
	// {"build_id":"…","template_id":"…","offset":N and each line ends in '\n'.
	head := len(`{"build_id":""`) + len(buildID) + len(`,"template_id":""`) + len(templateID) +
		len(`,"offset":`) + len(strconv.FormatUint(first+uint64(len(b.Tails)), 10)) + 1
	n := head * len(b.Tails)
	for _, t := range b.Tails {
		n += len(t)
	}
	dst := make([]byte, 0, n)
	for i, t := range b.Tails {
		dst = AppendEntryHead(dst, buildID, templateID, first+uint64(i))
		dst = append(dst, t...)
		dst = append(dst, '\n')
	}
	return dst
}

// Notice is the omission notice a read meets at offset from, which must
// lie in o's range: a chunk of one warning entry at offset o.To standing
// for offsets from through o.To. When from is past the range's start, the
// part's bytes are estimated in proportion to its entries (the store keeps
// the range's totals, not each dropped entry's size).
func Notice(o *buildlog.Omitted, buildID, templateID string, from uint64, limit int64) buildlog.Chunk {
	b := NewBatch([]buildlog.Entry{noticeEntry(o, from, limit)}, nil, nil)
	return buildlog.Chunk{First: o.To, Count: 1, Data: EncodeBatch(b, buildID, templateID, o.To), Notice: true}
}

// noticeEntry is the entry of Notice.
func noticeEntry(o *buildlog.Omitted, from uint64, limit int64) buildlog.Entry {
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
		buildlog.Thousands(entries), buildlog.HumanBytes(bytes), buildlog.HumanBytes(uint64(limit)))
	e := buildlog.Entry{Timestamp: o.Timestamp, Kind: buildlog.KindWarning, Level: buildlog.LevelWarn, Message: msg, ResultMetadata: meta}
	if e.Timestamp == "" {
		e.Timestamp = buildlog.Timestamp(time.Unix(0, 0))
	}
	return e
}

// EventBody is the JSON a delivery of an event carries: the build as the
// API shows it at the moment of the event. Stores render it in the
// transaction that records the event, so every attempt sends the same
// bytes, and a build deleted since is still described.
func EventBody(id, typ string, at time.Time, b *buildlog.Build) ([]byte, error) {
	c := *b
	c.EntryCount = c.NextOffset // as GET /v1/templates/builds/{id} shows it
	return json.Marshal(struct {
		ID        string          `json:"id"`
		Type      string          `json:"type"`
		CreatedAt time.Time       `json:"created_at"`
		Build     *buildlog.Build `json:"build"`
	}{id, typ, at.UTC(), &c})
}
