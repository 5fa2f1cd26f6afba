package wire

import (
	"bytes"
	"encoding/json"
)

// LastTimestamp returns the timestamp of the last of chunk data's lines,
// or "" if it has none that can be read.
func LastTimestamp(data []byte) string {
	data = bytes.TrimRight(data, "\n")
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		data = data[i+1:]
	}
	var e struct {
		Timestamp string `json:"timestamp"`
	}
	if json.Unmarshal(data, &e) != nil {
		return ""
	}
	return e.Timestamp
}
