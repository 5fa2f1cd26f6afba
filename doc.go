// Package buildlog holds the vocabulary of the build log service: a Build of
// a template, the append-only log of Entries it owns, the dense Offsets that
// address them, the Status a build moves through, and the Store that keeps
// all of it durably, with the rules each must obey. Implementations live
// under internal/; this package has no SQL, no HTTP and no JSON codec in
// it (internal/wire writes and reads the wire format).
package buildlog
