package testkit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"buildlog/internal/storetest"
)

// Delivery is a request a Receiver got.
type Delivery struct {
	Header http.Header
	Body   []byte
	At     time.Time // when it arrived
}

// Event is the delivery's body, decoded; a body that is not an event
// decodes to the zero event, for the test's checks to report.
func (d Delivery) Event() storetest.EventBody {
	var e storetest.EventBody
	json.Unmarshal(d.Body, &e)
	return e
}

// Receiver is a real HTTP server, on loopback, that webhooks are delivered
// to: it records what it gets, holds each delivery to the API's document
// (which describes what hooks receive under its webhooks), and answers
// with respond(n) for its n-th request (from 1), 204 when respond is nil.
type Receiver struct {
	*httptest.Server
	t   testing.TB
	got chan Delivery
	mu  sync.Mutex
	n   int
}

// NewReceiver starts a receiver on a free port, closed when t ends.
func NewReceiver(t testing.TB, respond func(n int, r *http.Request) int) *Receiver {
	return NewRawReceiver(t, answer(respond))
}

// NewReceiverOn starts a receiver on addr, which the caller knows to be
// free (a hook may have been failing to reach it already).
func NewReceiverOn(t testing.TB, addr string, respond func(n int, r *http.Request) int) *Receiver {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	return start(t, ln, answer(respond))
}

// NewRawReceiver is a receiver whose handler does all the answering;
// it calls rc.Note to record a request.
func NewRawReceiver(t testing.TB, h func(rc *Receiver, w http.ResponseWriter, r *http.Request)) *Receiver {
	return start(t, nil, h)
}

// start serves h on ln, or on a free port when ln is nil.
func start(t testing.TB, ln net.Listener, h func(rc *Receiver, w http.ResponseWriter, r *http.Request)) *Receiver {
	rc := &Receiver{t: t, got: make(chan Delivery, 1000)}
	rc.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h(rc, w, r) }))
	if ln != nil {
		rc.Listener.Close()
		rc.Listener = ln
	}
	rc.Start()
	t.Cleanup(rc.Close)
	return rc
}

func answer(respond func(n int, r *http.Request) int) func(rc *Receiver, w http.ResponseWriter, r *http.Request) {
	return func(rc *Receiver, w http.ResponseWriter, r *http.Request) {
		n := rc.Note(r)
		code := http.StatusNoContent
		if respond != nil {
			code = respond(n, r)
		}
		w.WriteHeader(code)
	}
}

// Note records r and returns its number, from 1.
func (rc *Receiver) Note(r *http.Request) int {
	body, _ := io.ReadAll(r.Body)
	if err := MustDoc(rc.t).CheckDelivery(r.Header, body); err != nil {
		rc.t.Errorf("openapi: %v", err)
	}
	rc.mu.Lock()
	rc.n++
	n := rc.n
	rc.mu.Unlock()
	rc.got <- Delivery{Header: r.Header.Clone(), Body: body, At: time.Now()}
	return n
}

// Count is how many requests the receiver got.
func (rc *Receiver) Count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.n
}

// Next waits up to 20 s for the receiver's next request.
func (rc *Receiver) Next(t testing.TB) Delivery {
	t.Helper()
	return rc.NextWithin(t, 20*time.Second)
}

// NextWithin waits up to d for the receiver's next request.
func (rc *Receiver) NextWithin(t testing.TB, d time.Duration) Delivery {
	t.Helper()
	select {
	case r := <-rc.got:
		return r
	case <-time.After(d):
		t.Fatalf("no delivery within %v", d)
		return Delivery{}
	}
}

// Verify fails the test unless d's signature verifies with secret.
func Verify(t testing.TB, secret string, d Delivery) {
	t.Helper()
	if err := CheckSignature(secret, d); err != nil {
		t.Error(err)
	}
}

// CheckSignature is a receiver's check of Buildlog-Signature: the
// HMAC-SHA256 of "<t>.<body>" with the hook's secret, and a timestamp t
// within 5 minutes of the delivery's arrival.
func CheckSignature(secret string, d Delivery) error {
	sig := d.Header.Get("Buildlog-Signature")
	var ts, v1 string
	for _, part := range strings.Split(sig, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			v1 = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("Buildlog-Signature %q: no t=<unix seconds>", sig)
	}
	if d := d.At.Sub(time.Unix(sec, 0)); d < -5*time.Minute || d > 5*time.Minute {
		return fmt.Errorf("Buildlog-Signature t=%s is %v away from the request", ts, d)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(d.Body)
	got, err := hex.DecodeString(v1)
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		return fmt.Errorf("Buildlog-Signature %q does not verify with the hook's secret", sig)
	}
	return nil
}
