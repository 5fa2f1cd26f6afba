// Package testkit holds what the tests of several packages need alike: a
// free loopback address, a real store of either kind closed at cleanup,
// the API's OpenAPI checker, API requests built one way, polling until a
// condition holds, a TCP proxy that fails on purpose, a real webhook
// receiver and the reading of SSE streams. It is imported by tests only;
// nothing here is a mock, every helper works on the real thing over
// loopback or on disk.
//
// It imports the SQLite store, the HTTP API and storetest, so the
// in-package tests of those packages (and storetest itself) cannot use
// it; their external tests can.
package testkit

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"buildlog/internal/apicheck"
	"buildlog/internal/httpapi"
	"buildlog/internal/sqlite"
)

// FreeAddr returns a loopback address nothing listens on. Something else
// may take it before the caller listens there: a server started on it
// must be waited for until it says it listens.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := FreeLoopback()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// FreeLoopback is FreeAddr for callers that have no testing.TB to fail,
// such as a testscript Setup.
//
// The port is below Linux's ephemeral range (32768–60999 by default), in
// which every listener on port 0 and every outgoing connection's own port
// is chosen: tests open thousands of connections at once, and a port
// freed there was, once in a while, taken as one's source port before a
// `buildlog serve` child could listen on it. Below it only other callers
// of this function pick ports, at random.
func FreeLoopback() (string, error) {
	for range 100 {
		port := freeLow + rand.IntN(freeHigh-freeLow)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue // taken
		}
		addr := l.Addr().String()
		l.Close()
		return addr, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// The ports FreeLoopback picks from.
const freeLow, freeHigh = 20000, 32000

// OpenStore opens a real store with open (sqlite.Open, postgres.Open) on
// where (a directory, a DSN), closed when the test ends.
func OpenStore[S io.Closer](tb testing.TB, open func(context.Context, string) (S, error), where string) S {
	tb.Helper()
	st, err := open(context.Background(), where)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// OpenSQLite opens a real SQLite store in dir, closed when the test ends.
func OpenSQLite(tb testing.TB, dir string) *sqlite.Store {
	tb.Helper()
	return OpenStore(tb, sqlite.Open, dir)
}

// Eventually polls cond every 10 ms and fails the test, naming what it
// waited for, if cond has not held within timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting %v: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// SyncBuffer is a bytes.Buffer safe for a server's goroutines to write
// (its log, a process's output) while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	docOnce sync.Once
	doc     *apicheck.Checker
	docErr  error
)

// Doc is the checker of the API's OpenAPI document (GET /openapi.json),
// built once per test binary, as building it takes a while. Every test
// that talks to the API puts its exchanges through it, so that the
// document and the handlers cannot drift apart.
func Doc() (*apicheck.Checker, error) {
	docOnce.Do(func() { doc, docErr = apicheck.New(httpapi.Document()) })
	return doc, docErr
}

// MustDoc is Doc for a test, which fails if the document does not load.
func MustDoc(t testing.TB) *apicheck.Checker {
	t.Helper()
	c, err := Doc()
	if err != nil {
		t.Fatal(err)
	}
	return c
}
