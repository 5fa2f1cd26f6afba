package buildlog

import (
	"errors"
	"testing"
)

func TestStatusTable(t *testing.T) {
	codes := []string{EInvalid, EUnauthorized, EForbidden, ENotFound, EConflict, ETooLarge,
		EUnsupported, ERateLimited, EUnavailable, EInternal}
	seen := map[int]string{}
	for _, c := range codes {
		st := HTTPStatus(c)
		if prev, dup := seen[st]; dup {
			t.Errorf("%s and %s share status %d", prev, c, st)
		}
		seen[st] = c
		if got := StatusCode(st); got != c {
			t.Errorf("StatusCode(HTTPStatus(%s) = %d) = %s", c, st, got)
		}
	}
	for _, tt := range []struct {
		status int
		want   string
	}{{502, EUnavailable}, {504, EUnavailable}, {418, EInvalid}} {
		if got := StatusCode(tt.status); got != tt.want {
			t.Errorf("StatusCode(%d) = %s, want %s", tt.status, got, tt.want)
		}
	}
	if got := HTTPStatus("no_such_code"); got != 500 {
		t.Errorf("HTTPStatus of an unknown code = %d, want 500", got)
	}
	if got := ErrorCode(errors.New("disk full")); got != EUnavailable {
		t.Errorf("ErrorCode of an uncoded error = %s, want %s", got, EUnavailable)
	}
}
