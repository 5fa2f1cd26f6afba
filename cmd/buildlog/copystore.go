package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"buildlog"
	"buildlog/internal/postgres"
	"buildlog/internal/sqlite"
)

const copyStoreUsage = `Usage: buildlog copy-store --data DIR --store postgres://...

Copies the embedded store in DIR into an empty PostgreSQL database: every
build with its log (same ids, same offsets, same bytes), the API keys,
the webhooks and the server secret, so keys, stream tokens and page tokens
stay valid. It is how an installation moves from one server to several.
Webhook deliveries still pending in DIR are not copied.

Stop the server that uses DIR first: entries appended during the copy are
not copied. The database must hold no builds and no keys; the schema is
created as 'serve' creates it. Run it before starting servers on the
database. Each build is copied in one transaction; if the copy fails, drop
and recreate the database and run it again.

Example:
  buildlog copy-store --data ./buildlog-data --store 'postgres://buildlog@db:5432/buildlog'

Flags (each also BUILDLOG_<FLAG>, as for serve):
`

func copyStoreCmd(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("copy-store", copyStoreUsage, stderr)
	data := fs.String("data", "./buildlog-data", "directory of the embedded store to copy")
	dsn := fs.String("store", "", "postgres:// URL of the database to copy into")
	if help, err := parseCommand(fs, args, env); help || err != nil {
		return err
	}
	if !strings.HasPrefix(*dsn, "postgres://") && !strings.HasPrefix(*dsn, "postgresql://") {
		return usageError{"copy-store: --store: want the postgres:// URL of the database to copy into"}
	}
	// sqlite.Open would create an empty store in a mistyped directory.
	if _, err := os.Stat(filepath.Join(*data, sqlite.FileName)); err != nil {
		return usageError{fmt.Sprintf("copy-store: --data: no embedded store in %s (%s not found)", *data, sqlite.FileName)}
	}
	src, err := sqlite.Open(ctx, *data)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := postgres.Open(ctx, *dsn)
	if err != nil {
		return err
	}
	defer dst.Close()
	st, err := dst.Import(ctx, src, func(st postgres.ImportStats) {
		if st.Builds%1000 == 0 {
			fmt.Fprintf(stderr, "copy-store: %d builds, %d entries so far\n", st.Builds, st.Entries)
		}
	})
	if err != nil {
		var be *buildlog.Error
		if errors.As(err, &be) {
			return fmt.Errorf("copy-store: %s", be.Message)
		}
		return fmt.Errorf("copy-store: %w (after %d builds; drop and recreate the database before trying again)", err, st.Builds)
	}
	fmt.Fprintf(stdout, "copied %d builds (%d entries) and %d keys from %s to PostgreSQL\n", st.Builds, st.Entries, st.Keys, *data)
	if st.Webhooks > 0 {
		fmt.Fprintf(stdout, "copied %d webhooks (deliveries still pending in %s were not copied)\n", st.Webhooks, *data)
	}
	return nil
}
