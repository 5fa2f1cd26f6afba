package buildlog

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"slices"
	"strings"
	"time"
)

// Scope is a right a key carries.
type Scope string

const (
	ScopeRead  Scope = "read"
	ScopeWrite Scope = "write"
	// ScopeAdmin has every right on every team, as BUILDLOG_ADMIN_KEY does.
	ScopeAdmin Scope = "admin"
)

// Key is an API key as stored: only a hash of its secret.
type Key struct {
	ID        string    `json:"id"`
	Team      string    `json:"team"`
	Scopes    []Scope   `json:"scopes"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	Hash      []byte    `json:"-"`
}

// Can reports whether the key grants s.
func (k *Key) Can(s Scope) bool {
	return slices.Contains(k.Scopes, ScopeAdmin) || slices.Contains(k.Scopes, s)
}

// Admin reports whether the key crosses teams.
func (k *Key) Admin() bool { return slices.Contains(k.Scopes, ScopeAdmin) }

// KeyPrefix starts every generated key, so a leaked one is recognisable.
const KeyPrefix = "bl_"

// NewKeySecret returns a fresh key secret and its id.
func NewKeySecret() (secret, id string) {
	return newSecret(KeyPrefix, "key_")
}

// newSecret returns 32 random bytes after secretPrefix and an id of 8
// random bytes, in hex, after idPrefix: a key and a hook secret are made
// alike.
func newSecret(secretPrefix, idPrefix string) (secret, id string) {
	b := make([]byte, 32)
	rand.Read(b)
	idb := make([]byte, 8)
	rand.Read(idb)
	return secretPrefix + base64.RawURLEncoding.EncodeToString(b), idPrefix + hex.EncodeToString(idb)
}

// HashKey is how keys are stored and looked up.
func HashKey(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// SameHash compares two key hashes in constant time.
func SameHash(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

// ParseScopes validates a scope list.
func ParseScopes(ss []string) ([]Scope, error) {
	if len(ss) == 0 {
		return nil, Errorf(EInvalid, "scopes: want one or more of read, write, admin")
	}
	var out []Scope
	for i, s := range ss {
		sc := Scope(strings.TrimSpace(s))
		switch sc {
		case ScopeRead, ScopeWrite, ScopeAdmin:
		default:
			return nil, Errorf(EInvalid, "scopes[%d]: want one of read, write, admin", i)
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out, nil
}
