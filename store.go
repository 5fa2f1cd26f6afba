package buildlog

import (
	"context"
	"time"
)

// Store keeps builds, their logs, keys and the server secret durably. Every
// implementation passes internal/storetest. Methods return *Error values with
// the codes named below; any other error means the store itself failed and is
// reported as unavailable.
//
// Offsets are assigned only by Append and Finish, under a lock that
// serialises writers to one build (across processes, for a shared store), so
// they are dense and never reused. A method returns only after its change is
// durable. Append, Finish and DeleteFinished go through one group-commit
// writer per store (internal/group): what is queued while it commits is
// committed together, each request judged on its own.
type Store interface {
	// CreateBuild stores a new queued build; conflict if b.ID exists.
	CreateBuild(ctx context.Context, b *Build) error
	// Build returns the build with id; not_found if there is none.
	Build(ctx context.Context, id string) (*Build, error)
	// Builds lists builds newest first (by CreatedAt, then ID descending).
	Builds(ctx context.Context, f BuildFilter) ([]*Build, error)
	// LatestBuild returns the newest build of namespace/name/version visible
	// to team ("" for every team); not_found if there is none.
	LatestBuild(ctx context.Context, team, namespace, name, version string) (*Build, error)

	// Append stores a batch at the build's next offset in one transaction
	// and moves a queued build to building. It records now as the build's
	// last activity, or may keep the recorded one when that is less than
	// ActivityGranularity older. With b.FirstOffset set it is an
	// idempotent retry: if a batch with the same Hash was stored at that
	// offset it answers as the first time (Replayed) and stores nothing;
	// if the offset is not next, conflict with NextOffset. Appending to a
	// finished build is conflict; an unknown build not_found, as is a
	// build whose CreatedAt is not b.Created (when set); a b.KeyID (when
	// set) that no longer exists is unauthorized. If ctx ends while the
	// batch waits for the writer, it is not stored and ctx's error is
	// returned.
	Append(ctx context.Context, buildID string, b *Batch, now time.Time) (AppendResult, error)
	// Finish appends f's terminal entry and sets the status in one
	// transaction, sealing the log. Finishing with the status the build
	// already has returns it unchanged (with an empty chunk); with another
	// terminal status, or when f.IdleBefore is set and the build was active
	// since, conflict.
	Finish(ctx context.Context, buildID string, f *Finish, now time.Time) (*Build, Chunk, error)

	// ReadLog returns stored chunks in offset order starting with the one
	// holding offset from, stopping once about maxBytes were read (at least
	// one chunk when any exists at from) or after MaxReadChunks chunks. None
	// when from is at or past the end. A result under both bounds reached
	// the log's end as of the read: followers rely on this to wait without
	// asking again.
	ReadLog(ctx context.Context, buildID string, from uint64, maxBytes int) ([]Chunk, error)

	// IdleBuilds returns ids of unfinished builds whose last activity is
	// before t, oldest first, at most limit.
	IdleBuilds(ctx context.Context, before time.Time, limit int) ([]string, error)
	// DeleteFinished deletes up to limit builds (and their logs) that
	// finished before t; it returns how many it deleted.
	DeleteFinished(ctx context.Context, before time.Time, limit int) (int, error)

	// CreateKey stores k; conflict if its id exists.
	CreateKey(ctx context.Context, k *Key) error
	// KeyByHash returns the key whose hash is hash; not_found if none.
	KeyByHash(ctx context.Context, hash []byte) (*Key, error)
	// Keys lists every key, oldest first.
	Keys(ctx context.Context) ([]*Key, error)
	// DeleteKey revokes a key; not_found if there is none.
	DeleteKey(ctx context.Context, id string) error

	// Webhooks. Append (on the queued→building transition) and Finish (on
	// any change to a terminal status, the idle sweep's included) record
	// the event, in the same transaction as the change, as one pending
	// Delivery to each hook of the build's team that takes its type, due
	// at once; so a crash after the change delays its deliveries but never
	// loses them. Finishing again with the same status records nothing.

	// CreateWebhook stores h; conflict if its id exists.
	CreateWebhook(ctx context.Context, h *Webhook) error
	// Webhook returns the hook with id, its secret included; not_found if
	// there is none.
	Webhook(ctx context.Context, id string) (*Webhook, error)
	// Webhooks lists the hooks of team ("" for every team), oldest first,
	// secrets included.
	Webhooks(ctx context.Context, team string) ([]*Webhook, error)
	// DeleteWebhook deletes a hook, its pending deliveries and its attempt
	// records; not_found if there is none.
	DeleteWebhook(ctx context.Context, id string) error
	// ClaimDeliveries returns up to limit deliveries due at now (oldest due
	// first), skipping those of the hooks in skipHooks, and claims each
	// until now+lease: no ClaimDeliveries in any process returns it again
	// before then unless RecordDelivery releases it. A claim that runs out
	// (its process died mid-attempt) makes the delivery due again.
	ClaimDeliveries(ctx context.Context, now time.Time, lease time.Duration, limit int, skipHooks []string) ([]*Delivery, error)
	// RecordDelivery ends d's claim: it stores the attempt record a (when
	// not nil; a's Attempt becomes d's count of attempts made) and then
	// either drops d (retryAt zero: delivered or given up) or makes it due
	// again at retryAt. Conflict, changing nothing, if d's claim no longer
	// holds (it ran out and another claim took d, or d's hook was
	// deleted).
	RecordDelivery(ctx context.Context, d *Delivery, a *DeliveryAttempt, retryAt time.Time) error
	// DeliveryAttempts lists a hook's attempt records, newest first, at
	// most limit; none for an unknown hook.
	DeliveryAttempts(ctx context.Context, hookID string, limit int) ([]*DeliveryAttempt, error)
	// PruneDeliveryAttempts deletes up to limit attempt records made
	// before t, oldest first; it returns how many it deleted.
	PruneDeliveryAttempts(ctx context.Context, before time.Time, limit int) (int, error)
	// PendingDeliveries describes every delivery not yet delivered or
	// given up, claimed or not.
	PendingDeliveries(ctx context.Context) (DeliveryQueue, error)

	// Secret returns the server secret (for signing tokens), creating it on
	// first use; every process sharing the store gets the same one.
	Secret(ctx context.Context) ([]byte, error)
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
	Close() error
}

// BuildFilter selects builds to list.
type BuildFilter struct {
	Team       string // "" for every team
	TemplateID string
	Status     Status
	Limit      int
	// After continues a listing past the build with this creation time and id.
	After *BuildCursor
}

// BuildCursor is a position in the newest-first build order.
type BuildCursor struct {
	CreatedAt time.Time
	ID        string
}

// CommitWatcher is implemented by stores that several processes share. It
// calls fn with a build's id whenever any process commits to that build's
// log, and with "" when notices may have been missed (a dropped listener
// was re-established), meaning every follower should re-read the store. It
// runs until ctx ends.
type CommitWatcher interface {
	WatchCommits(ctx context.Context, fn func(buildID string)) error
}

// MaxReadChunks bounds the chunks one ReadLog returns, so that a page of
// tiny batches costs a store no more work than a page of large ones.
const MaxReadChunks = 256

// ActivityGranularity is how finely a store records a build's last
// activity for the idle sweep: an append within this long of the recorded
// activity may leave it as it is. Rewriting it on every append rewrote the
// idle index with it, one more page per append in SQLite's WAL (a single
// small append wrote five pages where three are needed); the idle sweep
// waits this much longer than its timeout, so a build is never timed out
// early.
const ActivityGranularity = 100 * time.Millisecond
