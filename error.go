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

// statuses pairs every code with the HTTP status it is answered with. It
// is the one table: the server writes errors by it, and the Go client
// reads a bare status (a proxy's 502 page, say) back to a code by it.
var statuses = []struct {
	code   string
	status int
}{
	{EInvalid, 400}, {EUnauthorized, 401}, {EForbidden, 403}, {ENotFound, 404},
	{EConflict, 409}, {ETooLarge, 413}, {EUnsupported, 415}, {ERateLimited, 429},
	{EUnavailable, 503}, {EInternal, 500},
}

// HTTPStatus is the status a code is answered with; 500 for a code not in
// the table.
func HTTPStatus(code string) int {
	for _, s := range statuses {
		if s.code == code {
			return s.status
		}
	}
	return 500
}

// StatusCode is the code of an answer that carried only a status: the
// table's, else unavailable for any other 5xx and invalid for any other
// 4xx.
func StatusCode(status int) string {
	for _, s := range statuses {
		if s.status == status {
			return s.code
		}
	}
	if status >= 500 {
		return EUnavailable
	}
	return EInvalid
}

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

// ErrorCode returns the code of err's *Error, or EUnavailable when it has
// none: an error without a code is a failure of something the server
// depends on (the store's disk or database), which a client may retry,
// and is answered as such (see Store).
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err == nil {
		return ""
	}
	return EUnavailable
}

// ErrorMessage returns the client-safe message of err.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
