package postgres

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Hooks for the external tests (cluster_test.go), which run the HTTP API on
// this store and so live outside the package: httpapi's test helpers and
// the API itself are not for a store package to import.

// FreshSchema is freshSchema: an empty schema in the run's own database,
// dropped when t ends, as a DSN.
func FreshSchema(t testing.TB) string { return freshSchema(t) }

// ListenerPID is the backend of the store's newest LISTEN connection.
func (s *Store) ListenerPID() uint32 { return s.listenerPID.Load() }

// AdminPool is a pool on the run's database that belongs to no store, to
// cut a store's connections from outside as an operator would.
func AdminPool() *pgxpool.Pool { return testDB.Pool }

// SetListenBackoff makes the listener wait at least d/2 before reconnecting,
// for one test, so that commits can be made while it is surely not
// listening. Call it before starting stores: it is not synchronised.
func SetListenBackoff(t testing.TB, d time.Duration) {
	old := minBackoff
	minBackoff = d
	t.Cleanup(func() { minBackoff = old })
}
