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

// A key given twice is refused: encoding/json would keep the last value and
// an OpenAPI validator or a proxy the first, so the body would mean two
// things. Found by FuzzAppendBody: {"entries":[],"entries":[{…}]} was
// stored while the document says a batch is never empty.
func TestDuplicateKeysRefused(t *testing.T) {
	lim := buildlog.Limits{}.WithDefaults()
	for _, tc := range []struct {
		body   string
		ndjson bool
		want   string
	}{
		{`{"entries":[],"entries":[{"message":"x"}]}`, false, "body.entries: given more than once"},
		{`{"entries":[{"message":"x"}],"entries":[]}`, false, "body.entries: given more than once"},
		{`{"first_offset":1,"entries":[{"message":"x"}],"first_offset":0}`, false, "body.first_offset: given more than once"},
		{`[{"message":"x","level":"warn","level":"info"}]`, false, "entries[0].level: given more than once"},
		{`[{"message":"a"},{"message":"x","message":"y"}]`, false, "entries[1].message: given more than once"},
		{"{\"message\":\"x\",\"message\":\"y\"}\n", true, "entries[0].message: given more than once"},
	} {
		_, _, err := wire.DecodeBatch([]byte(tc.body), tc.ndjson, lim)
		if buildlog.ErrorCode(err) != buildlog.EInvalid || !strings.Contains(buildlog.ErrorMessage(err), tc.want) {
			t.Errorf("%s: %v, want invalid: %s", tc.body, err, tc.want)
		}
	}
	if _, err := wire.DecodeNewBuild([]byte(`{"build_id":"a","build_id":"b"}`)); err == nil || !strings.Contains(err.Error(), "build_id: given more than once") {
		t.Errorf("new build with build_id twice: %v", err)
	}
	if _, err := wire.DecodeFinish([]byte(`{"status":"ready","status":"failed"}`)); err == nil || !strings.Contains(err.Error(), "status: given more than once") {
		t.Errorf("finish with status twice: %v", err)
	}
	if _, _, err := wire.DecodeNewWebhook([]byte(`{"url":"https://example.com/a","url":"https://example.com/b"}`)); err == nil || !strings.Contains(err.Error(), "url: given more than once") {
		t.Errorf("webhook with url twice: %v", err)
	}
	// Inside free JSON the keys are the producer's own business.
	if _, _, err := wire.DecodeBatch([]byte(`[{"message":"x","result":{"a":1,"a":2}}]`), false, lim); err != nil {
		t.Errorf("duplicate keys inside result: %v", err)
	}
}
