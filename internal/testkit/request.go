package testkit

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// NewRequest is a request to the API as tests send them. body is nil,
// []byte or a string sent as it is, or any other value encoded as JSON;
// one that is not nil goes as application/json. key, unless "", is the
// bearer token. hdr are header name, value pairs, set last, so that they
// may replace the Content-Type.
func NewRequest(ctx context.Context, method, url, key string, body any, hdr ...string) (*http.Request, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return req, nil
}

// Call sends the request NewRequest builds and reads its answer, closing
// the body. A request that cannot be built or sent fails the test; a body
// cut short comes back as far as it came, with the error that cut it, for
// the test to judge. The request sent is res.Request.
func Call(t testing.TB, method, url, key string, body any, hdr ...string) (res *http.Response, b []byte, readErr error) {
	t.Helper()
	req, err := NewRequest(context.Background(), method, url, key, body, hdr...)
	if err != nil {
		t.Fatal(err)
	}
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, readErr = io.ReadAll(res.Body)
	return res, b, readErr
}
