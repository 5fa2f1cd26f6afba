// Package buildlog holds the vocabulary of the build log service: a Build of
// a template, the append-only log of Entries it owns, the dense Offsets that
// address them, the Status a build moves through, and the Store that keeps
// all of it durably. Implementations live under internal/; this package has
// no SQL and no HTTP in it.
package buildlog
