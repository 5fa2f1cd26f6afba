package main

import (
	"context"

	"buildlog"
	"buildlog/internal/postgres"
)

func openPostgres(ctx context.Context, dsn string) (buildlog.Store, error) {
	return postgres.Open(ctx, dsn)
}
