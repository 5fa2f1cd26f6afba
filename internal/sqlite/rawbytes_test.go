package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"testing"

	msqlite "modernc.org/sqlite"

	"buildlog"
	"buildlog/internal/storetest"
	"buildlog/internal/wire"
)

// reusingDriver is modernc.org/sqlite, except that each result set hands
// out the []byte values of a column in one buffer that every row
// overwrites. The driver contract allows it, and it is why database/sql
// says sql.RawBytes is valid only until the next Next.
type reusingDriver struct{ msqlite.Driver }

func (d *reusingDriver) Open(name string) (driver.Conn, error) {
	c, err := d.Driver.Open(name)
	if err != nil {
		return nil, err
	}
	return reusingConn{c}, nil
}

type reusingConn struct{ driver.Conn }

func (c reusingConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c reusingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	st, err := c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	return reusingStmt{st}, nil
}

func (c reusingConn) ResetSession(ctx context.Context) error {
	return c.Conn.(driver.SessionResetter).ResetSession(ctx)
}

type reusingStmt struct{ driver.Stmt }

func (s reusingStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	r, err := s.Stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	return &reusingRows{Rows: r}, nil
}

func (s reusingStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return s.Stmt.(driver.StmtExecContext).ExecContext(ctx, args)
}

type reusingRows struct {
	driver.Rows
	bufs [][]byte
}

func (r *reusingRows) Next(dest []driver.Value) error {
	if err := r.Rows.Next(dest); err != nil {
		return err
	}
	if r.bufs == nil {
		r.bufs = make([][]byte, len(dest))
	}
	for i, v := range dest {
		if b, ok := v.([]byte); ok {
			r.bufs[i] = append(r.bufs[i][:0], b...)
			dest[i] = r.bufs[i]
		}
	}
	return nil
}

func init() { sql.Register("sqlite-reusing", &reusingDriver{}) }

// ReadLog's chunks stay intact after the rows they came from: a driver
// may reuse its buffers from row to row, so nothing the driver owns may
// be kept past Next.
func TestReadLogKeepsNoDriverMemory(t *testing.T) {
	defer func(d string) { readDriver = d }(readDriver)
	readDriver = "sqlite-reusing"
	s, err := Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.CreateBuild(ctx, storetest.NewBuild("reuse", storetest.At(0))); err != nil {
		t.Fatal(err)
	}
	var want [][]byte
	for i := range 3 {
		es := []buildlog.Entry{{Timestamp: "2026-03-17T00:00:12Z", Kind: buildlog.KindMessage, Level: buildlog.LevelInfo,
			Message: fmt.Sprintf("batch %d %s", i, bytes.Repeat([]byte{'a' + byte(i)}, 100*(3-i)))}}
		res, err := s.Append(ctx, "reuse", wire.NewBatch(es, nil, nil), storetest.At(1))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, bytes.Clone(res.Chunk.Data))
	}
	chunks, err := s.ReadLog(ctx, "reuse", 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) != len(want) {
		t.Fatalf("%d chunks, want %d", len(chunks), len(want))
	}
	for i, c := range chunks {
		if !bytes.Equal(c.Data, want[i]) {
			t.Errorf("chunk %d reads\n%s\nwant\n%s", i, c.Data, want[i])
		}
	}
}
