package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// Listener timing. pingEvery bounds how long a silently dead connection (a
// peer gone without a FIN) can go unnoticed; the backoff spreads the
// reconnects of many servers after a database restart.
var (
	pingEvery   = 30 * time.Second
	minBackoff  = 100 * time.Millisecond
	maxBackoff  = 5 * time.Second
	dialTimeout = 10 * time.Second
)

// errClosed ends WatchCommits when the store is closed.
var errClosed = errors.New("postgres: store closed")

// WatchCommits calls fn with a build's id whenever any server commits to
// that build's log, until ctx ends (it then returns ctx.Err()) or the store
// is closed. fn is called from one goroutine, in commit order per server,
// and must not block for long: notices queue behind it.
//
// It listens on a connection of its own, outside the pool, so that a busy
// pool never delays notices and the listener never holds a query slot. When
// that connection fails it is re-established with backoff, and then fn("")
// tells followers that notices may have been missed. fn("") is also called
// once the first LISTEN is in place, since commits before it were not
// heard: a caller may treat it as "listening from now on".
func (s *Store) WatchCommits(ctx context.Context, fn func(buildID string)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.closed:
			cancel()
		case <-ctx.Done():
		}
	}()

	backoff := minBackoff
	for {
		start := time.Now()
		conn, err := s.listen(ctx)
		if err == nil {
			fn("")
			s.relay(ctx, conn, fn)
			closeCtx, done := context.WithTimeout(context.Background(), time.Second)
			conn.Close(closeCtx)
			done()
		}
		if ctx.Err() != nil {
			select {
			case <-s.closed:
				return errClosed
			default:
				return ctx.Err()
			}
		}
		// A connection that lived a while was healthy: start backing off
		// afresh, so one blip costs one short pause.
		if time.Since(start) > 2*maxBackoff {
			backoff = minBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, maxBackoff)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// listen opens a connection with the pool's settings and LISTENs on it.
func (s *Store) listen(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	cfg := s.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = "buildlog-listener"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: listen: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+commitChannel); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("postgres: listen: %w", err)
	}
	s.listenerPID.Store(conn.PgConn().PID())
	return conn, nil
}

// relay passes notices to fn until the connection fails or ctx ends. A
// quiet connection is pinged every pingEvery: waiting alone would not
// notice a peer that vanished without closing the socket.
func (s *Store) relay(ctx context.Context, conn *pgx.Conn, fn func(string)) {
	for {
		wait, cancel := context.WithTimeout(ctx, pingEvery)
		n, err := conn.WaitForNotification(wait)
		cancel()
		switch {
		case err == nil:
			fn(n.Payload)
		case ctx.Err() != nil:
			return
		case wait.Err() != nil && !conn.IsClosed():
			// Only our timer fired; the connection is intact (pgx treats a
			// read deadline as recoverable), so check it is still alive.
			ping, cancel := context.WithTimeout(ctx, dialTimeout)
			err := conn.Ping(ping)
			cancel()
			if err != nil {
				return
			}
		default:
			return
		}
	}
}
