package wire_test

import (
	"testing"

	"buildlog/internal/wire"
)

// A finish body's mistakes are named, an empty body included (it once
// read "body: EOF").
func TestDecodeFinishErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"", `invalid: body: empty; want {"status": "ready" | "failed" | "cancelled" | "timeout"}`},
		{"  \n", `invalid: body: empty; want {"status": "ready" | "failed" | "cancelled" | "timeout"}`},
		{`{}`, "invalid: status: required; want one of ready, failed, cancelled, timeout"},
		{`{"status":"done"}`, "invalid: status: want one of ready, failed, cancelled, timeout"},
		{`{"status":"ready","x":1}`, "invalid: body.x: unknown field"},
		{`{"status":"failed","result":[1]}`, "invalid: result: want a JSON object"},
	} {
		_, err := wire.DecodeFinish([]byte(tc.body))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q: %v, want %s", tc.body, err, tc.want)
		}
	}
}
