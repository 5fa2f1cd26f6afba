package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"buildlog"
)

const keyColumns = `id, team, scopes, name, created_at, hash`

func scanKey(row pgx.Row) (*buildlog.Key, error) {
	var (
		k       buildlog.Key
		scopes  []string
		created time.Time
	)
	if err := row.Scan(&k.ID, &k.Team, &scopes, &k.Name, &created, &k.Hash); err != nil {
		return nil, err
	}
	k.CreatedAt = created.UTC()
	k.Scopes = make([]buildlog.Scope, len(scopes))
	for i, sc := range scopes {
		k.Scopes[i] = buildlog.Scope(sc)
	}
	return &k, nil
}

// CreateKey stores k; conflict if its id (or, improbably, its hash) exists.
func (s *Store) CreateKey(ctx context.Context, k *buildlog.Key) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	scopes := make([]string, len(k.Scopes))
	for i, sc := range k.Scopes {
		scopes[i] = string(sc)
	}
	return insertOne(ctx, s.pool, "create key", buildlog.Errorf(buildlog.EConflict, "key %s already exists", k.ID),
		`INSERT INTO keys (`+keyColumns+`) VALUES ($1, $2, $3, $4, $5, $6)`,
		k.ID, k.Team, scopes, k.Name, k.CreatedAt, k.Hash)
}

// KeyByHash returns the key whose hash is hash; not_found if none. The
// lookup is by equality on an index: the hash is of a 256-bit random
// secret, so its timing tells an attacker nothing useful.
func (s *Store) KeyByHash(ctx context.Context, hash []byte) (*buildlog.Key, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	k, err := scanKey(s.pool.QueryRow(ctx, `SELECT `+keyColumns+` FROM keys WHERE hash = $1`, hash))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, buildlog.Errorf(buildlog.ENotFound, "no such key")
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: key by hash: %w", err)
	}
	return k, nil
}

// Keys lists every key, oldest first.
func (s *Store) Keys(ctx context.Context) ([]*buildlog.Key, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return queryAll(ctx, s, "keys", scanKey, `SELECT `+keyColumns+` FROM keys ORDER BY created_at, id`)
}

// DeleteKey revokes a key at once, on every server (each looks keys up in
// the database); not_found if there is none.
func (s *Store) DeleteKey(ctx context.Context, id string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return deleteOne(ctx, s, "delete key", buildlog.Errorf(buildlog.ENotFound, "key %s not found", id),
		`DELETE FROM keys WHERE id = $1`, id)
}
