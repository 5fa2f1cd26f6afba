package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Scratch databases are for runs that must not see each other's data:
// the tests (BUILDLOG_TEST_POSTGRES) and `buildlog bench --store`. They
// live here, beside the store, because they are the same dependency.

// CreateDatabase creates an empty database named prefix plus random hex
// on the server admin names, and returns its DSN and a func that drops it
// (also when sessions are still connected).
func CreateDatabase(ctx context.Context, admin, prefix string) (string, func() error, error) {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", nil, err
	}
	name := prefix + randomHex(6)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		conn.Close(ctx)
		return "", nil, fmt.Errorf("create database %s: %w", name, err)
	}
	drop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		return nil
	}
	dsn, err := WithParam(admin, "dbname", name)
	if err != nil {
		drop()
		return "", nil, err
	}
	return dsn, drop, nil
}

// WithParam returns dsn (URL or key=value form) with one more setting; pgx
// passes settings it does not know, such as search_path, to the server.
func WithParam(dsn, key, value string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", err
		}
		if key == "dbname" {
			u.Path = "/" + value
			return u.String(), nil
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	// In key=value form the last setting of a key wins.
	return dsn + " " + key + "=" + value, nil
}

// Scratch is a database made for one run, in which each test takes a
// fresh schema: a schema is much cheaper than a database and just as
// isolated.
type Scratch struct {
	DSN  string        // of the run's own database
	Pool *pgxpool.Pool // on it, belonging to no store: for schemas, and to act on stores from outside
	drop func() error
	seq  atomic.Int64
}

// NewScratch creates a scratch database on the server admin names.
func NewScratch(ctx context.Context, admin, prefix string) (*Scratch, error) {
	dsn, drop, err := CreateDatabase(ctx, admin, prefix)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		drop()
		return nil, err
	}
	return &Scratch{DSN: dsn, Pool: pool, drop: drop}, nil
}

// Schema creates an empty schema and returns a DSN whose search_path puts
// migrations and queries there, and a func that drops it.
func (s *Scratch) Schema(ctx context.Context) (string, func() error, error) {
	schema := fmt.Sprintf("t%d_%s", s.seq.Add(1), randomHex(4))
	if _, err := s.Pool.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		return "", nil, fmt.Errorf("create schema: %w", err)
	}
	drop := func() error {
		if _, err := s.Pool.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			return fmt.Errorf("drop schema %s: %w", schema, err)
		}
		return nil
	}
	dsn, err := WithParam(s.DSN, "search_path", schema)
	if err != nil {
		drop()
		return "", nil, err
	}
	return dsn, drop, nil
}

// Close drops the database.
func (s *Scratch) Close() error {
	s.Pool.Close()
	return s.drop()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
