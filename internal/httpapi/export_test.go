package httpapi

import "time"

// SetStreamWriteTimeout changes how long one stream write may block, for
// tests of stalled readers; it returns a func restoring the old value.
func SetStreamWriteTimeout(d time.Duration) (restore func()) {
	old := streamWriteTimeout.Swap(int64(d))
	return func() { streamWriteTimeout.Store(old) }
}
