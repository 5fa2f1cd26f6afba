// Package postgres is a buildlog.Store on PostgreSQL, for several servers
// sharing one database. Every writer to a build locks its row, so offsets
// stay dense across servers, and every commit to a log is announced with
// NOTIFY so that each server can wake its followers (WatchCommits).
package postgres

import (
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"buildlog"
	"buildlog/internal/logwrite"
	"buildlog/internal/segment"
)

var (
	_ buildlog.Store         = (*Store)(nil)
	_ buildlog.CommitWatcher = (*Store)(nil)
)

// DefaultTimeout bounds every query whose context has no sooner deadline, so
// that a hung connection or a lock held elsewhere turns into an error (and a
// 503) rather than a request that never ends.
const DefaultTimeout = 10 * time.Second

// DefaultPoolSize is the connection pool's size unless the DSN sets
// pool_max_conns: the group-commit writer holds one connection at a time
// for all of a server's appends, so the rest serve reads (a follower's
// read after a commit notice, replays, pages, lookups), which are mostly
// CPU on both sides; more than a few per core only queue in PostgreSQL.
// The LISTEN connection of WatchCommits is outside the pool.
func DefaultPoolSize() int32 { return int32(max(8, 2*runtime.GOMAXPROCS(0))) }

// migrateTimeout is longer: a future migration may rewrite a large table,
// and a server starting beside another waits for the other's migration.
const migrateTimeout = 5 * time.Minute

// commitChannel carries the id of every build whose log a transaction
// changed; the notice is delivered when (and only if) it commits.
const commitChannel = "buildlog_commits"

//go:embed migrations/*.sql
var migrationFS embed.FS

// Store is a buildlog.Store on a pgx connection pool.
type Store struct {
	pool    *pgxpool.Pool
	timeout time.Duration

	closeOnce sync.Once
	closed    chan struct{}

	secretMu sync.Mutex
	secret   []byte

	// listenerPID is the backend of the newest LISTEN connection, so tests
	// can cut it.
	listenerPID atomic.Uint32

	// Writer is this server's group-commit writer (see commit), started
	// by Open and stopped by Close; every server sharing a database
	// should be given the same SetLogCap. compactor is the background
	// compaction (StartCompactor), stopped by Close before the writer.
	logwrite.Writer[pgx.Tx, opX]
	compactor segment.Background
}

// Open connects to the database dsn names (a postgres:// URL or key=value
// string, as pgx reads them), applies any migrations not yet applied and
// returns the store. Several servers may Open the same database at once.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The DSN may hold a password; pgx's parse errors redact it.
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "buildlog"
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = DefaultPoolSize()
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{pool: pool, timeout: DefaultTimeout, closed: make(chan struct{})}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	s.StartWriter(s.commit)
	return s, nil
}

// Close closes the pool and ends every WatchCommits. It is safe to call
// more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.compactor.Stop()
		s.StopWriter()
		close(s.closed)
		s.pool.Close()
	})
	return nil
}

// Ping reports whether the database answers, through the pool, so that a
// pool unable to reconnect shows as not ready. After the database restarts,
// the pool's idle connections are dead until used; a failed ping discards
// the one it used, so Ping tries again (at most once per pooled connection,
// then on a fresh one) rather than report a database that is back as down.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var err error
	for range s.pool.Config().MaxConns + 1 {
		if err = s.pool.Ping(ctx); err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Secret returns the server secret. The first server to ask inserts a random
// one; a concurrent first ask elsewhere loses the insert and reads the
// winner's, so every server signs with the same secret.
func (s *Store) Secret(ctx context.Context) ([]byte, error) {
	s.secretMu.Lock()
	defer s.secretMu.Unlock()
	if s.secret != nil {
		return s.secret, nil
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	fresh := make([]byte, 32)
	rand.Read(fresh)
	if _, err := s.pool.Exec(ctx,
		`INSERT INTO server_secret (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING`, fresh); err != nil {
		return nil, fmt.Errorf("postgres: secret: %w", err)
	}
	// A separate statement: in READ COMMITTED it sees a row committed by a
	// concurrent inserter, which the INSERT's own snapshot would not.
	var secret []byte
	if err := s.pool.QueryRow(ctx, `SELECT secret FROM server_secret WHERE id = 1`).Scan(&secret); err != nil {
		return nil, fmt.Errorf("postgres: secret: %w", err)
	}
	s.secret = secret
	return secret, nil
}

// bound gives ctx the store's default deadline unless it has a sooner one.
func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	files, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, f := range files {
		name := strings.TrimPrefix(f, "migrations/")
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("postgres: migration %s: want NNNN_name.sql", name)
		}
		body, err := migrationFS.ReadFile(f)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, sql: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("postgres: migrations %s and %s share a number", ms[i-1].name, ms[i].name)
		}
	}
	return ms, nil
}

// migrateLockClass namespaces the advisory lock (its second half is the
// schema's hash), so that it cannot collide with locks other software takes.
const migrateLockClass = 0x62_6c_6f_67 // "blog"

// migrate applies pending migrations in one transaction under an advisory
// lock, so that servers starting together apply each migration exactly once
// and none of them runs on a half-migrated schema. The lock is per schema:
// installations (and test runs) in different schemas of one database do not
// wait for each other.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, migrateTimeout)
	defer cancel()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))`,
			int32(migrateLockClass)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return err
		}
		applied, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return err
		}
		done := make(map[int]bool, len(applied))
		newest := 0
		for _, v := range applied {
			done[int(v)] = true
			newest = max(newest, int(v))
		}
		if last := ms[len(ms)-1].version; newest > last {
			// A newer server migrated this database; running old code on it
			// could corrupt what the new schema means.
			return fmt.Errorf("database is at migration %d, newer than this build knows (%d)", newest, last)
		}
		for _, m := range ms {
			if done[m.version] {
				continue
			}
			// No arguments: pgx sends it as a simple query, which may hold
			// several statements.
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`,
				m.version, m.name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	return nil
}

// isUniqueViolation reports whether err is PostgreSQL's unique_violation.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// queryAll runs q on the pool and scans every row it returns; op names the
// operation in the errors. No rows is a nil slice.
func queryAll[T any](ctx context.Context, s *Store, op string, scan func(pgx.Row) (T, error), q string, args ...any) ([]T, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", op, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: %s: %w", op, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", op, err)
	}
	return out, nil
}

// insertOne runs an INSERT of one row on db; op names the operation in the
// errors. A unique violation is conflict, the caller's own error.
func insertOne(ctx context.Context, db execer, op string, conflict error, q string, args ...any) error {
	_, err := db.Exec(ctx, q, args...)
	if isUniqueViolation(err) {
		return conflict
	}
	if err != nil {
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	return nil
}

// deleteOne runs a DELETE of one row on the pool; op names the operation
// in the errors. Deleting no row is none, the caller's own error.
func deleteOne(ctx context.Context, s *Store, op string, none error, q string, args ...any) error {
	tag, err := s.pool.Exec(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	if tag.RowsAffected() == 0 {
		return none
	}
	return nil
}
