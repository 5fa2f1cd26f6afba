package httpapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"

	"buildlog"
)

// Dialect C's nextToken names a position in one build's log: the offset of
// the next line to return. It is base64url (no padding, so it needs no
// escaping in a URL) of the offset's 8 bytes and an HMAC over build id and
// offset, so a client cannot forge a position, move a token to another
// build, or learn anything from it but that it is opaque. Tokens are
// stateless and never expire: every server sharing the store shares the
// key, and a position in a log never changes meaning.
const pageMACSize = 16

func (a *API) pageMAC(buildID string, off uint64) []byte {
	m := hmac.New(sha256.New, a.pageKey)
	m.Write([]byte("c1|"))
	m.Write([]byte(buildID))
	var b [9]byte
	b[0] = '|'
	binary.BigEndian.PutUint64(b[1:], off)
	m.Write(b[:])
	return m.Sum(nil)[:pageMACSize]
}

func (a *API) signPageToken(buildID string, off uint64) string {
	raw := binary.BigEndian.AppendUint64(make([]byte, 0, 8+pageMACSize), off)
	return base64.RawURLEncoding.EncodeToString(append(raw, a.pageMAC(buildID, off)...))
}

// checkPageToken returns the offset tok names; malformed, forged and other
// builds' tokens are all the same 400.
func (a *API) checkPageToken(buildID, tok string) (uint64, error) {
	bad := buildlog.Errorf(buildlog.EInvalid, "nextToken: not a token this server issued for build %s", buildID)
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(raw) != 8+pageMACSize {
		return 0, bad
	}
	off := binary.BigEndian.Uint64(raw[:8])
	if !hmac.Equal(raw[8:], a.pageMAC(buildID, off)) {
		return 0, bad
	}
	return off, nil
}
