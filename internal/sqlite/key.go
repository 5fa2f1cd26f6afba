package sqlite

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"

	"buildlog"
)

const keyCols = `id, team, scopes, name, created_at, hash`

func scanKey(row scanner) (*buildlog.Key, error) {
	var (
		k       buildlog.Key
		scopes  string
		created int64
	)
	if err := row.Scan(&k.ID, &k.Team, &scopes, &k.Name, &created, &k.Hash); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(scopes), &k.Scopes); err != nil {
		return nil, err
	}
	k.CreatedAt = fromNanos(created)
	return &k, nil
}

// CreateKey stores k; conflict if its id (or hash) exists.
func (s *Store) CreateKey(ctx context.Context, k *buildlog.Key) error {
	scopes, err := json.Marshal(k.Scopes)
	if err != nil {
		return wrap("create key", err)
	}
	return execOne(ctx, s.w, "create key", buildlog.Errorf(buildlog.EConflict, "key %s already exists", k.ID),
		`INSERT INTO keys (`+keyCols+`) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT DO NOTHING`, k.ID, k.Team, string(scopes), k.Name, nanos(k.CreatedAt), k.Hash)
}

// KeyByHash returns the key whose hash is hash; not_found if none.
func (s *Store) KeyByHash(ctx context.Context, hash []byte) (*buildlog.Key, error) {
	k, err := scanKey(s.r.QueryRowContext(ctx, `SELECT `+keyCols+` FROM keys WHERE hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, buildlog.Errorf(buildlog.ENotFound, "no such key")
	}
	return k, wrap("read key", err)
}

// Keys lists every key, oldest first.
func (s *Store) Keys(ctx context.Context) ([]*buildlog.Key, error) {
	return queryAll(ctx, s.r, "list keys", scanKey, `SELECT `+keyCols+` FROM keys ORDER BY created_at, id`)
}

// DeleteKey revokes a key; not_found if there is none.
func (s *Store) DeleteKey(ctx context.Context, id string) error {
	return execOne(ctx, s.w, "delete key", buildlog.Errorf(buildlog.ENotFound, "key %s not found", id),
		`DELETE FROM keys WHERE id = ?`, id)
}

// Secret returns the server secret, creating it on first use. The insert
// and read share one write transaction, so processes racing to create it
// all end up with the first one's.
func (s *Store) Secret(ctx context.Context) ([]byte, error) {
	s.secretMu.Lock()
	defer s.secretMu.Unlock()
	if s.secret == nil {
		secret, err := s.loadSecret(ctx)
		if err != nil {
			return nil, wrap("secret", err)
		}
		s.secret = secret
	}
	return bytes.Clone(s.secret), nil
}

func (s *Store) loadSecret(ctx context.Context) ([]byte, error) {
	fresh := make([]byte, 32)
	rand.Read(fresh)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO settings (name, value) VALUES ('secret', ?) ON CONFLICT DO NOTHING`, fresh); err != nil {
		return nil, err
	}
	var secret []byte
	if err := tx.QueryRowContext(ctx, `SELECT value FROM settings WHERE name = 'secret'`).Scan(&secret); err != nil {
		return nil, err
	}
	return secret, tx.Commit()
}
