package httpapi

import (
	"net/http"
	"time"
)

// SetStreamWriteTimeout changes how long one stream write may block, for
// tests of stalled readers; it returns a func restoring the old value.
func SetStreamWriteTimeout(d time.Duration) (restore func()) {
	old := streamWriteTimeout.Swap(int64(d))
	return func() { streamWriteTimeout.Store(old) }
}

// Patterns is the route table's patterns, each with whether it is
// documented, for the tests that hold the table, the mux and the
// document to each other.
func Patterns() map[string]bool {
	out := map[string]bool{}
	for _, rt := range (&API{}).table() {
		out[rt.pattern] = rt.op != nil
	}
	return out
}

// RoutePattern is the pattern of the route the API's mux picks for r.
func (a *API) RoutePattern(r *http.Request) string {
	_, p := a.mux.Handler(r)
	return p
}
