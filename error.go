package buildlog

import (
	"errors"
	"fmt"
)

// Error codes. Each maps to exactly one HTTP status, in internal/httpapi.
const (
	EInvalid      = "invalid"      // 400: the request is malformed or breaks a rule
	EUnauthorized = "unauthorized" // 401: no key, or an unknown one
	EForbidden    = "forbidden"    // 403: the key lacks the scope
	ENotFound     = "not_found"    // 404: absent, or another team's
	EConflict     = "conflict"     // 409: the state forbids it (exists, finished, offset mismatch)
	ETooLarge     = "too_large"    // 413: body, batch or field over a limit
	EUnsupported  = "unsupported"  // 415: a content type we do not read
	ERateLimited  = "rate_limited" // 429: too many streams or requests
	EUnavailable  = "unavailable"  // 503: the store cannot be reached or written
	EInternal     = "internal"     // 500: a bug; the detail goes to the log only
)

// Error is the one error type that crosses package boundaries with meaning.
// Message is shown to clients, so it never carries internal detail.
type Error struct {
	Code    string
	Message string
	// NextOffset is set on an append conflict so a producer can resync.
	NextOffset *uint64
	// RetryAfter (seconds) is set on rate limits.
	RetryAfter int
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err's *Error, or EInternal when it has none.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err == nil {
		return ""
	}
	return EInternal
}

// ErrorMessage returns the client-safe message of err.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
