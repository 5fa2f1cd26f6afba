package wire

import (
	"encoding/json"
	"strconv"

	"buildlog"
)

// AppendBody appends the append body the Go client sends for entries at
// first_offset first. Each entry is in the producer's form: the canonical
// fields without the server's, and without the timestamp, kind and level
// when they are empty, so that the server applies its defaults (its
// clock, kind message, level info). The raw JSON fields must hold valid
// JSON; DecodeBatch checks the rest.
func AppendBody(dst []byte, first uint64, entries []buildlog.Entry) ([]byte, error) {
	dst = append(dst, `{"entries":[`...)
	for i := range entries {
		e := &entries[i]
		for _, raw := range [...]struct {
			key string
			v   json.RawMessage
		}{{"error_detail", e.ErrorDetail}, {"result", e.Result}, {"result_metadata", e.ResultMetadata}} {
			if len(raw.v) > 0 && !json.Valid(raw.v) {
				return nil, buildlog.Errorf(buildlog.EInvalid, "entries[%d].%s: not valid JSON", i, raw.key)
			}
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendStr(dst, `{"message":`, e.Message)
		dst = appendOptStr(dst, `,"timestamp":`, e.Timestamp)
		dst = appendOptStr(dst, `,"kind":`, string(e.Kind))
		dst = appendOptStr(dst, `,"level":`, string(e.Level))
		dst = appendOptional(dst, e)
	}
	dst = append(dst, `],"first_offset":`...)
	dst = strconv.AppendUint(dst, first, 10)
	return append(dst, '}'), nil
}
