package wire_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"testing"

	"buildlog"
	"buildlog/internal/wire"
)

// fuzzLimits are small, so that fuzzing reaches the limits' paths.
var fuzzLimits = buildlog.Limits{MaxBatch: 50, MaxMessage: 256}

// FuzzDecodeBatch: whatever the body, JSON or NDJSON, DecodeBatch does not
// panic; it refuses with a client error (invalid or too_large, with a
// message), or accepts entries that obey every rule and survive a round
// trip through their canonical encoding unchanged.
func FuzzDecodeBatch(f *testing.F) {
	for _, s := range []string{
		`[{"message":"hi"}]`,
		`{"entries":[{"message":"a","level":"warn","phase":"boot"}],"first_offset":3}`,
		`[{"message":"x","timestamp":"2026-03-17T00:00:12.5+01:00","kind":"cache","cache_kind":"layer","cache_status":"hit","cache_reason":"force_upload","cache_subject":"RUN npm ci"}]`,
		`[{"message":"s","step_index":1,"total_steps":2,"attempt":1,"max_attempts":3,"source":"npm","error_detail":{"a":[1,{"b":null}]},"result":{},"result_metadata":{"k":"v"}}]`,
		`[{"message":"\u00e9\ud83d\ude00\"\\\n\t<>&\u2028"}]`,
		`[{"message":"a","kind":"end"}]`,
		`[{"message":"a","extra":1}]`,
		`[{"message":"a","step_index":3,"total_steps":2}]`,
		`[{"message":"a"},{"message":"b"}`,
		`{"entries":[],"first_offset":-1}`,
		`[]`, ``, `null`, `{}`, `[1]`, `[{"message":null}]`, `[{"message":"a","message":"b"}]`,
	} {
		f.Add([]byte(s), false)
	}
	for _, s := range []string{
		"{\"message\":\"a\"}\n{\"message\":\"b\",\"level\":\"debug\"}\n",
		"{\"message\":\"a\"}\r\n\r\n{\"message\":\"b\"}",
		"{\"message\":\"a\"}\n[1]\n",
		"\n\n",
		"{\"message\":\"a\"} {\"message\":\"b\"}\n",
	} {
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, ndjson bool) {
		orig := bytes.Clone(body)
		entries, first, err := wire.DecodeBatch(body, ndjson, fuzzLimits)
		if !bytes.Equal(body, orig) {
			t.Fatal("DecodeBatch changed its input")
		}
		if err != nil {
			var e *buildlog.Error
			if !errors.As(err, &e) || (e.Code != buildlog.EInvalid && e.Code != buildlog.ETooLarge) || e.Message == "" {
				t.Fatalf("refusal is not a client error: %#v", err)
			}
			if entries != nil || first != nil {
				t.Fatal("refusal with results")
			}
			return
		}
		if len(entries) == 0 || len(entries) > fuzzLimits.MaxBatch {
			t.Fatalf("accepted %d entries", len(entries))
		}
		if ndjson && first != nil {
			t.Fatal("NDJSON body gave a first_offset")
		}
		var canon bytes.Buffer
		for i := range entries {
			e := &entries[i]
			if len(e.Message) > fuzzLimits.MaxMessage {
				t.Fatalf("entries[%d]: message of %d bytes accepted", i, len(e.Message))
			}
			if !slices.Contains(buildlog.Kinds, e.Kind) || e.Terminal() {
				t.Fatalf("entries[%d]: kind %q accepted", i, e.Kind)
			}
			if !slices.Contains(buildlog.Levels, e.Level) {
				t.Fatalf("entries[%d]: level %q accepted", i, e.Level)
			}
			if !json.Valid(wire.AppendEntry(nil, e)) {
				t.Fatalf("entries[%d]: canonical form is not JSON: %s", i, wire.AppendEntry(nil, e))
			}
			canon.Write(wire.AppendEntry(nil, e))
			canon.WriteByte('\n')
		}
		// The canonical lines, read back as NDJSON, are the same entries.
		again, _, err := wire.DecodeBatch(stripServerFields(t, canon.Bytes()), true, fuzzLimits)
		if err != nil {
			t.Fatalf("canonical form refused: %v\n%s", err, canon.Bytes())
		}
		for i := range entries {
			a, b := wire.AppendEntry(nil, &entries[i]), wire.AppendEntry(nil, &again[i])
			if !bytes.Equal(a, b) {
				t.Fatalf("entries[%d] changed in a round trip:\n%s\n%s", i, a, b)
			}
		}
		// The fingerprint taken from the stored encoding is the one taken
		// from the entries (a retry is recognised whichever was stored).
		if h, tails := wire.HashEntries(entries), wire.HashTails(wire.NewBatch(entries, nil, nil).Tails); !bytes.Equal(h, tails) {
			t.Fatalf("HashTails %x, HashEntries %x", tails, h)
		}
	})
}

// stripServerFields removes build_id, template_id and offset, which a
// producer may not send, and an unfilled timestamp, from canonical lines.
func stripServerFields(t *testing.T, lines []byte) []byte {
	var out bytes.Buffer
	for _, l := range bytes.Split(bytes.TrimSuffix(lines, []byte("\n")), []byte("\n")) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("canonical line is not an object: %s", l)
		}
		delete(m, "build_id")
		delete(m, "template_id")
		delete(m, "offset")
		if string(m["timestamp"]) == `""` {
			delete(m, "timestamp") // left for the server to fill
		}
		// Not json.Marshal: it HTML-escapes inside raw values ("&" becomes
		// "\u0026"), which would change the raw fields this round trip
		// compares byte for byte (a case the fuzzer found).
		enc := json.NewEncoder(&out)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(m); err != nil { // Encode ends the line
			t.Fatalf("re-encoding a canonical line: %v", err)
		}
	}
	return out.Bytes()
}

// fuzzBody fuzzes the decoder of a request body other than a batch from
// seeds: whatever the body, decode refuses it with a client error or
// accepts it, never panics, and what it accepts passes check.
func fuzzBody[T any](f *testing.F, seeds []string, decode func([]byte) (T, error), check func(t *testing.T, v T)) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := decode(body)
		if err != nil {
			wantClientError(t, err)
			return
		}
		check(t, v)
	})
}

func FuzzDecodeNewBuild(f *testing.F) {
	fuzzBody(f, []string{
		`{}`, `{"build_id":"tb_1","namespace":"ns","name":"n","version":"1.0.0-rc.1+b5","total_steps":3,"max_attempts":2,"metadata":{"a":1},"team":"t","secrets":["s"]}`,
		`{"build_id":"-bad"}`, `{"version":"v1.0.0"}`, `{"secrets":[""]}`, `{"x":1}`, `[]`, ``, `{"metadata":[]}`,
	}, wire.DecodeNewBuild, func(t *testing.T, nb *buildlog.NewBuild) {
		if nb.BuildID != nil && !buildlog.ValidID(*nb.BuildID) {
			t.Fatalf("build_id %q accepted", *nb.BuildID)
		}
		if nb.Version != nil && *nb.Version != "" && !buildlog.ValidVersion(*nb.Version) {
			t.Fatalf("version %q accepted", *nb.Version)
		}
	})
}

// newWebhook is what DecodeNewWebhook accepts: the hook and its parsed URL.
type newWebhook struct {
	hook *buildlog.NewWebhook
	url  *url.URL
}

func FuzzDecodeNewWebhook(f *testing.F) {
	fuzzBody(f, []string{
		`{"url":"https://ci.example.com/h","events":["build.started","build.finished"],"team":"acme"}`,
		`{"url":"http://[::1]:8080/x?y=1#z"}`, `{"url":"ftp://x"}`, `{"url":"http://h:99999/"}`, `{"url":"http:///p"}`,
		`{"url":"https://h","events":[]}`, `{"url":"https://h","events":["build.exploded"]}`, `{"url":"https://h","secret":"s"}`,
		`{"url":"https://h","team":"bad team"}`, `{}`, `[]`, ``,
	}, func(body []byte) (newWebhook, error) {
		nw, u, err := wire.DecodeNewWebhook(body)
		return newWebhook{nw, u}, err
	}, func(t *testing.T, w newWebhook) {
		nw, u := w.hook, w.url
		if (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || len(nw.URL) > buildlog.MaxWebhookURL {
			t.Fatalf("url %q accepted", nw.URL)
		}
		if len(nw.Events) == 0 {
			t.Fatalf("no events accepted")
		}
		for _, e := range nw.Events {
			if !slices.Contains(buildlog.EventTypes, e) {
				t.Fatalf("event %q accepted", e)
			}
		}
		if nw.Team != nil && !buildlog.ValidID(*nw.Team) {
			t.Fatalf("team %q accepted", *nw.Team)
		}
	})
}

func FuzzDecodeFinish(f *testing.F) {
	fuzzBody(f, []string{
		`{"status":"ready"}`, `{"status":"failed","message":"m","error_detail":{"x":1}}`, `{"status":"done"}`, `{}`, `[]`, ``,
		`{"status":"cancelled","result":{},"result_metadata":{}}`,
	}, wire.DecodeFinish, func(t *testing.T, fin *buildlog.Finish) {
		if !fin.Status.Terminal() {
			t.Fatalf("finish with status %q accepted", fin.Status)
		}
	})
}

func wantClientError(t *testing.T, err error) {
	t.Helper()
	var e *buildlog.Error
	if !errors.As(err, &e) || e.Code != buildlog.EInvalid || e.Message == "" {
		t.Fatalf("refusal is not a 400: %#v", err)
	}
}
