package wire_test

import (
	"strings"
	"testing"

	"buildlog"
	"buildlog/internal/wire"
)

// Field names are exact: encoding/json alone would take "MESSAGE" for
// "message" and "STATUS" for "status", and the body would be stored as if
// it were right. Keys inside free JSON (result, error_detail) are the
// producer's own and may be anything.
func TestFieldNamesAreExact(t *testing.T) {
	lim := buildlog.Limits{}.WithDefaults()
	batch := func(body string, ndjson bool) error {
		_, _, err := wire.DecodeBatch([]byte(body), ndjson, lim)
		return err
	}
	for _, tc := range []struct {
		name string
		err  error
		want string // in the message; "" for accepted
	}{
		{"entry key", batch(`[{"MESSAGE":"hi"}]`, false), "MESSAGE"},
		{"entry key mixed", batch(`[{"message":"hi","Level":"warn"}]`, false), "Level"},
		{"ndjson entry key", batch("{\"message\":\"hi\",\"Phase\":\"x\"}\n", true), "Phase"},
		{"wrapper key", batch(`{"Entries":[{"message":"hi"}]}`, false), "Entries"},
		{"wrapper first_offset", batch(`{"entries":[{"message":"hi"}],"First_Offset":0}`, false), "First_Offset"},
		{"free JSON keeps its keys", batch(`[{"message":"hi","result_metadata":{"Any":"Case","NESTED":{"X":[{"Y":1}]}}}]`, false), ""},
		{"exact keys", batch(`[{"message":"hi","level":"warn","phase":"build"}]`, false), ""},
	} {
		switch {
		case tc.want == "" && tc.err != nil:
			t.Errorf("%s: refused: %v", tc.name, tc.err)
		case tc.want != "" && (tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) || !strings.Contains(tc.err.Error(), "unknown field")):
			t.Errorf("%s: %v, want an unknown-field error naming %s", tc.name, tc.err, tc.want)
		}
	}
	if _, err := wire.DecodeNewBuild([]byte(`{"BUILD_ID":"b1"}`)); err == nil || !strings.Contains(err.Error(), "BUILD_ID: unknown field") {
		t.Errorf("new build with BUILD_ID: %v", err)
	}
	if _, err := wire.DecodeFinish([]byte(`{"STATUS":"ready"}`)); err == nil || !strings.Contains(err.Error(), "STATUS: unknown field") {
		t.Errorf("finish with STATUS: %v", err)
	}
	if _, err := wire.DecodeFinish([]byte(`{"status":"failed","error_detail":{"Code":"E1"}}`)); err != nil {
		t.Errorf("finish with free error_detail keys: %v", err)
	}
	if _, _, err := wire.DecodeNewWebhook([]byte(`{"URL":"https://example.com/h"}`)); err == nil || !strings.Contains(err.Error(), "URL: unknown field") {
		t.Errorf("webhook with URL: %v", err)
	}
}
