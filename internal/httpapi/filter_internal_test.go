package httpapi

import (
	"strings"
	"testing"

	"buildlog"
	"buildlog/internal/wire"
)

func TestFilterKeepsTerminal(t *testing.T) {
	f := filter{minLevel: buildlog.LevelError.Rank(), kinds: []buildlog.Kind{buildlog.KindCache}, phases: []string{"x"}}
	e := buildlog.Entry{BuildID: "b", TemplateID: "t", Offset: 3, Timestamp: "2026-03-17T00:00:12Z", Kind: buildlog.KindEnd, Level: buildlog.LevelInfo, Message: "done"}
	line := wire.AppendEntry(nil, &e)
	c := buildlog.Chunk{First: 3, Count: 1, Data: append(line, '\n'), Terminal: true}
	if !f.keep(c, 3, line) {
		t.Fatal("the terminal entry was filtered out")
	}
	c.Terminal = false
	if f.keep(c, 3, line) {
		t.Fatal("a non-matching entry passed")
	}
}

func TestNegotiate(t *testing.T) {
	cases := map[string]form{
		"":                                  formSSE,
		"*/*":                               formSSE,
		"text/event-stream":                 formSSE,
		"application/x-ndjson":              formNDJSON,
		"application/ndjson":                formNDJSON,
		"application/json":                  formJSON,
		"Application/JSON; charset=utf-8":   formJSON,
		"text/html, application/json;q=0.9": formJSON,
		"application/json;q=0.5, text/event-stream": formSSE,
		"application/x-ndjson, application/json":    formNDJSON,
		"application/json;q=0, */*":                 formSSE,
		"text/plain":                                formSSE,
	}
	for accept, want := range cases {
		if got := negotiate(accept); got != want {
			t.Errorf("Accept %q: form %d, want %d", accept, got, want)
		}
	}
}

func TestPageTokens(t *testing.T) {
	a := New(Config{Store: nil, Secret: []byte("s1")})
	other := New(Config{Store: nil, Secret: []byte("s2")})
	tok := a.signPageToken("b1", 42)
	if off, err := a.checkPageToken("b1", tok); err != nil || off != 42 {
		t.Fatalf("round trip: %d %v", off, err)
	}
	if strings.ContainsAny(tok, "+/=%&?") {
		t.Fatalf("token needs URL escaping: %q", tok)
	}
	raw := []byte(tok)
	raw[3] ^= 1
	for _, bad := range []string{"", "x", tok + "A", string(raw), a.signPageToken("b2", 42)} {
		if _, err := a.checkPageToken("b1", bad); buildlog.ErrorCode(err) != buildlog.EInvalid || !strings.Contains(err.Error(), "nextToken") {
			t.Errorf("token %q accepted or misreported: %v", bad, err)
		}
	}
	if _, err := other.checkPageToken("b1", tok); err == nil {
		t.Error("a token signed with another secret was accepted")
	}
}
