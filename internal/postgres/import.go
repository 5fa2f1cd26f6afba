package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"buildlog"
)

// ImportStats counts what Import copied.
type ImportStats struct {
	Builds  int
	Entries uint64
	Keys    int
	// Webhooks are copied with their ids and secrets; their pending
	// deliveries and attempt records are not.
	Webhooks int
}

// importPage is how many bytes of log Import reads from the source at a
// time, so that a long log never sits in memory whole.
const importPage = 4 << 20

// importBuilds is how many builds Import lists from the source at a time
// (a variable so that a test can page with a few builds).
var importBuilds = 500

// Import copies everything src holds into s: the server secret, the API
// keys (as hashes, with their ids) and every build with its log, byte for
// byte, offsets unchanged. It is how an installation moves from the
// embedded store to PostgreSQL, so that build ids, keys, stream tokens and
// page tokens all stay valid. Webhooks are copied too (ids and secrets
// unchanged), but not deliveries still pending in src: copying builds
// records no events, so nothing already delivered is sent again.
//
// s must hold no builds and no keys (a conflict error otherwise), and no
// server should be using either store meanwhile: Import takes each build as
// src lists it, and entries appended later are not copied. Each build is
// copied in one transaction, so a failed Import leaves whole builds only;
// run it again on a fresh database. One thing is not carried over: the
// fingerprints that let a producer's retry of a batch stored before the
// copy be recognised (such a retry is answered 409 with the next offset).
// progress, if not nil, is called after each build.
func (s *Store) Import(ctx context.Context, src buildlog.Store, progress func(ImportStats)) (ImportStats, error) {
	var st ImportStats
	var used bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM builds) OR EXISTS (SELECT 1 FROM keys)`).Scan(&used); err != nil {
		return st, fmt.Errorf("postgres: import: %w", err)
	}
	if used {
		return st, buildlog.Errorf(buildlog.EConflict, "the PostgreSQL database already holds builds or keys; import only into a fresh one")
	}

	secret, err := src.Secret(ctx)
	if err != nil {
		return st, fmt.Errorf("import: reading the source's secret: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO server_secret (id, secret) VALUES (1, $1)
		ON CONFLICT (id) DO UPDATE SET secret = EXCLUDED.secret`, secret); err != nil {
		return st, fmt.Errorf("postgres: import secret: %w", err)
	}
	s.secretMu.Lock()
	s.secret = nil
	s.secretMu.Unlock()

	keys, err := src.Keys(ctx)
	if err != nil {
		return st, fmt.Errorf("import: reading the source's keys: %w", err)
	}
	for _, k := range keys {
		if err := s.CreateKey(ctx, k); err != nil {
			return st, fmt.Errorf("import: key %s: %w", k.ID, err)
		}
		st.Keys++
	}
	hooks, err := src.Webhooks(ctx, "")
	if err != nil {
		return st, fmt.Errorf("import: reading the source's webhooks: %w", err)
	}
	for _, h := range hooks {
		if err := s.CreateWebhook(ctx, h); err != nil {
			return st, fmt.Errorf("import: webhook %s: %w", h.ID, err)
		}
		st.Webhooks++
	}

	var after *buildlog.BuildCursor
	for {
		page, err := src.Builds(ctx, buildlog.BuildFilter{Limit: importBuilds, After: after})
		if err != nil {
			return st, fmt.Errorf("import: listing the source's builds: %w", err)
		}
		if len(page) == 0 {
			return st, nil
		}
		for _, b := range page {
			n, err := s.importBuild(ctx, src, b)
			if err != nil {
				return st, fmt.Errorf("import: build %s: %w", b.ID, err)
			}
			st.Builds++
			st.Entries += n
			if progress != nil {
				progress(st)
			}
		}
		last := page[len(page)-1]
		after = &buildlog.BuildCursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
}

// importBuild copies one build and its log up to b.NextOffset in one
// transaction, checking that the log is dense from 0 as it goes. It has no
// default deadline: a long log may take longer than DefaultTimeout to copy,
// and Import runs offline, under its caller's context.
func (s *Store) importBuild(ctx context.Context, src buildlog.Store, b *buildlog.Build) (uint64, error) {
	var next uint64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := insertBuild(ctx, tx, b); err != nil {
			return err
		}
		for next < b.NextOffset {
			chunks, err := src.ReadLog(ctx, b.ID, next, importPage)
			if err != nil {
				return err
			}
			var rows [][]any
			for _, c := range chunks {
				if c.First >= b.NextOffset {
					break
				}
				if c.Notice {
					// The size cap's dropped range: the build row carries
					// it (b.Omitted), and the notice is made on read.
					next = c.End()
					continue
				}
				if c.First != next || c.End() > b.NextOffset {
					return fmt.Errorf("source log has entries [%d, %d) where %d was next (of %d)", c.First, c.End(), next, b.NextOffset)
				}
				rows = append(rows, []any{b.ID, int64(c.First), c.Count, c.Terminal, c.Data})
				next = c.End()
			}
			if len(rows) == 0 && next < b.NextOffset {
				return fmt.Errorf("source log ends at %d, but the build says %d", next, b.NextOffset)
			}
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"chunks"},
				[]string{"build_id", "first_offset", "count", "terminal", "data"}, pgx.CopyFromRows(rows)); err != nil {
				return err
			}
		}
		return nil
	})
	return next, err
}
