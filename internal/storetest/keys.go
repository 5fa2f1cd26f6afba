package storetest

import (
	"bytes"
	"slices"
	"sync"
	"testing"

	"buildlog"
)

func testKeys(t *testing.T, s buildlog.Store) {
	k1 := &buildlog.Key{ID: "key_b", Team: "acme", Scopes: []buildlog.Scope{buildlog.ScopeRead, buildlog.ScopeWrite},
		Name: "ci", CreatedAt: At(2), Hash: buildlog.HashKey("secret-1")}
	k2 := &buildlog.Key{ID: "key_a", Team: "other", Scopes: []buildlog.Scope{buildlog.ScopeAdmin},
		Name: "", CreatedAt: At(1), Hash: buildlog.HashKey("secret-2")}
	for _, k := range []*buildlog.Key{k1, k2} {
		if err := s.CreateKey(t.Context(), k); err != nil {
			t.Fatalf("CreateKey(%s): %v", k.ID, err)
		}
	}
	wantKey := func(t *testing.T, got, want *buildlog.Key) {
		t.Helper()
		if got.ID != want.ID || got.Team != want.Team || got.Name != want.Name ||
			!slices.Equal(got.Scopes, want.Scopes) || !bytes.Equal(got.Hash, want.Hash) {
			t.Errorf("key = %+v, want %+v", got, want)
		}
		for _, d := range diffTime("CreatedAt", got.CreatedAt, want.CreatedAt) {
			t.Errorf("key %s: %s", want.ID, d)
		}
	}

	t.Run("by hash", func(t *testing.T) {
		got, err := s.KeyByHash(t.Context(), buildlog.HashKey("secret-1"))
		if err != nil {
			t.Fatalf("KeyByHash: %v", err)
		}
		wantKey(t, got, k1)
		_, err = s.KeyByHash(t.Context(), buildlog.HashKey("unknown"))
		wantCode(t, err, buildlog.ENotFound, "KeyByHash of an unknown hash")
	})
	t.Run("oldest first", func(t *testing.T) {
		got, err := s.Keys(t.Context())
		if err != nil {
			t.Fatalf("Keys: %v", err)
		}
		if len(got) != 2 {
			t.Fatalf("Keys: %d keys, want 2", len(got))
		}
		wantKey(t, got[0], k2)
		wantKey(t, got[1], k1)
	})
	t.Run("duplicate id", func(t *testing.T) {
		dup := *k1
		dup.Hash = buildlog.HashKey("secret-3")
		err := s.CreateKey(t.Context(), &dup)
		wantCode(t, err, buildlog.EConflict, "CreateKey of an existing id")
		_, err = s.KeyByHash(t.Context(), dup.Hash)
		wantCode(t, err, buildlog.ENotFound, "KeyByHash of a refused key")
	})
	t.Run("delete", func(t *testing.T) {
		if err := s.DeleteKey(t.Context(), k1.ID); err != nil {
			t.Fatalf("DeleteKey: %v", err)
		}
		_, err := s.KeyByHash(t.Context(), k1.Hash)
		wantCode(t, err, buildlog.ENotFound, "KeyByHash of a deleted key")
		got, err := s.Keys(t.Context())
		if err != nil {
			t.Fatalf("Keys: %v", err)
		}
		if len(got) != 1 || got[0].ID != k2.ID {
			t.Errorf("Keys after delete: %d keys, want only %s", len(got), k2.ID)
		}
		wantCode(t, s.DeleteKey(t.Context(), k1.ID), buildlog.ENotFound, "DeleteKey of a deleted key")
		wantCode(t, s.DeleteKey(t.Context(), "key_unknown"), buildlog.ENotFound, "DeleteKey of an unknown key")
	})
}

func testSecret(t *testing.T, s buildlog.Store) {
	// Concurrent first uses must agree on one secret.
	secrets := make([][]byte, 8)
	errs := make([]error, 8)
	var wg sync.WaitGroup
	for i := range secrets {
		wg.Go(func() { secrets[i], errs[i] = s.Secret(t.Context()) })
	}
	wg.Wait()
	for i := range secrets {
		if errs[i] != nil {
			t.Fatalf("Secret: %v", errs[i])
		}
		if len(secrets[i]) < 32 {
			t.Fatalf("Secret: %d bytes, want at least 32", len(secrets[i]))
		}
		if !bytes.Equal(secrets[i], secrets[0]) {
			t.Fatalf("Secret: call %d returned another secret", i)
		}
	}
	if bytes.Count(secrets[0], secrets[0][:1]) == len(secrets[0]) {
		t.Errorf("Secret = %x: not random", secrets[0])
	}
	again, err := s.Secret(t.Context())
	if err != nil || !bytes.Equal(again, secrets[0]) {
		t.Errorf("Secret again = %x, %v; want %x", again, err, secrets[0])
	}
}

func testPing(t *testing.T, s buildlog.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}
