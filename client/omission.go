package client

import (
	"encoding/json"

	"buildlog"
)

// Omission is what an omission notice stands for: where a server's size
// cap (serve --max-log-bytes) dropped the middle of a long log, a read
// gets one notice in place of the dropped entries, offsets From through
// To, Entries of them, Bytes of their lines (estimated in proportion to
// the entries when the read began part way into the dropped range).
//
// Stream yields the notice as the entry it is on the wire: at offset To,
// kind warning, level warn, a message such as "… 18,204 lines (96.1 MiB)
// omitted: …", and the counts in its result_metadata. Its offset is the
// last one it stands for, so Stream's bookkeeping takes the jump as any
// other entry and a resume from the offset after it goes on after the
// range; should the range have grown since, that resume meets a new
// notice for the new part.
type Omission struct {
	From    uint64 `json:"omitted_from"`
	To      uint64 `json:"omitted_to"`
	Entries uint64 `json:"omitted_entries"`
	Bytes   uint64 `json:"omitted_bytes"`
}

// OmissionOf reports whether e is an omission notice, and what it stands
// for. A notice is a warning whose result_metadata holds omitted_from and
// omitted_to, at offset omitted_to. The log's own producer could append
// an entry of that shape; like every reader, this trusts the log.
func OmissionOf(e *buildlog.Entry) (Omission, bool) {
	if e.Kind != buildlog.KindWarning || len(e.ResultMetadata) == 0 {
		return Omission{}, false
	}
	var m struct {
		From    *uint64 `json:"omitted_from"`
		To      *uint64 `json:"omitted_to"`
		Entries uint64  `json:"omitted_entries"`
		Bytes   uint64  `json:"omitted_bytes"`
	}
	if json.Unmarshal(e.ResultMetadata, &m) != nil || m.From == nil || m.To == nil || *m.From > *m.To || *m.To != e.Offset {
		return Omission{}, false
	}
	return Omission{From: *m.From, To: *m.To, Entries: m.Entries, Bytes: m.Bytes}, true
}
