package bench

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data (not its metadata, unless needed to read the
// data back), as SQLite's and PostgreSQL's WAL writes do.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
