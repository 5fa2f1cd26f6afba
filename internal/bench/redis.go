package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// redisServer is a private, durable redis-server the fleet scenario
// compares with: its own port on 127.0.0.1 and its own directory, an
// append-only file synced before every reply (appendfsync always: one
// fsync per event-loop turn, for all the clients served in it), no RDB
// snapshots. It is stopped and its directory removed by Close.
type redisServer struct {
	Addr    string
	PID     int
	Version string
	dir     string
	cmd     *exec.Cmd
	done    chan struct{}
}

// findRedis says which redis-server to run: bin as given, or the one on
// PATH for ""; "none" (or none found) means no comparison, with why.
func findRedis(bin string) (path, why string) {
	switch bin {
	case "none", "off":
		return "", "--redis none"
	case "":
		p, err := exec.LookPath("redis-server")
		if err != nil {
			return "", "no redis-server on PATH"
		}
		return p, ""
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", err.Error()
	}
	return p, ""
}

// startRedis runs bin in a fresh directory under parent and waits until it
// answers PING.
func startRedis(ctx context.Context, bin, parent string) (*redisServer, error) {
	dir, err := os.MkdirTemp(parent, "redis-")
	if err != nil {
		return nil, err
	}
	var last error
	// A free port found here can be taken before redis binds it; then try
	// another.
	for range 3 {
		port, err := freePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		rs, err := runRedis(ctx, bin, dir, port)
		if err == nil {
			return rs, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	os.RemoveAll(dir)
	return nil, last
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func runRedis(ctx context.Context, bin, dir string, port int) (*redisServer, error) {
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "",
		"--daemonize", "no")
	cmd.Dir = dir
	dieWithParent(cmd)
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	rs := &redisServer{Addr: "127.0.0.1:" + strconv.Itoa(port), PID: cmd.Process.Pid, dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(rs.done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := dialRedis(rs.Addr); err == nil {
			v, err := c.info("redis_version")
			c.close()
			if err == nil {
				rs.Version = v
				return rs, nil
			}
		}
		select {
		case <-rs.done:
			return nil, fmt.Errorf("%s exited: %s", bin, strings.TrimSpace(out.String()))
		case <-ctx.Done():
			rs.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			rs.stop()
			return nil, fmt.Errorf("%s did not answer on %s within 15s: %s", bin, rs.Addr, strings.TrimSpace(out.String()))
		}
	}
}

func (rs *redisServer) stop() {
	rs.cmd.Process.Signal(os.Interrupt)
	select {
	case <-rs.done:
	case <-time.After(10 * time.Second):
		rs.cmd.Process.Kill()
		<-rs.done
	}
}

// Close stops the server and removes its directory; nil is a no-op.
func (rs *redisServer) Close() {
	if rs == nil {
		return
	}
	rs.stop()
	os.RemoveAll(rs.dir)
}

func (rs *redisServer) meter() cpuMeter { return processMeter(rs.PID) }

// flush empties the server between rounds, so that its memory (every
// entry is kept in it) does not grow over the run.
func (rs *redisServer) flush() error {
	c, err := dialRedis(rs.Addr)
	if err != nil {
		return err
	}
	defer c.close()
	return c.do("FLUSHALL")
}

// tailBuffer keeps the last few KiB a child wrote, for an error message.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 4<<10 {
		t.b = append(t.b[:0], t.b[len(t.b)-4<<10:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// respConn is one connection of a minimal RESP2 client: enough to send
// commands (pipelined, in one write) and read their replies.
type respConn struct {
	nc  net.Conn
	br  *bufio.Reader
	out []byte
}

func dialRedis(addr string) (*respConn, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &respConn{nc: nc, br: bufio.NewReaderSize(nc, 16<<10)}, nil
}

func (c *respConn) close() { c.nc.Close() }

// appendCommand adds one command, as a RESP array of bulk strings, to dst.
func appendCommand(dst []byte, args ...[]byte) []byte {
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(len(args)), 10)
	dst = append(dst, "\r\n"...)
	for _, a := range args {
		dst = appendBulk(dst, a)
	}
	return dst
}

func appendBulk(dst, a []byte) []byte {
	dst = append(dst, '$')
	dst = strconv.AppendInt(dst, int64(len(a)), 10)
	dst = append(dst, "\r\n"...)
	dst = append(dst, a...)
	return append(dst, "\r\n"...)
}

// redisError is an error reply; the connection stays usable after it.
type redisError string

func (e redisError) Error() string { return "redis: " + string(e) }

// send writes b (one or more commands) and reads n replies, returning the
// first error reply, if any, as an error after reading them all.
func (c *respConn) send(b []byte, n int) error {
	if _, err := c.nc.Write(b); err != nil {
		return err
	}
	var first error
	for range n {
		msg, isErr, err := c.reply()
		if err != nil {
			return err
		}
		if isErr && first == nil {
			first = redisError(msg)
		}
	}
	return first
}

// do sends one command and reads its reply.
func (c *respConn) do(args ...string) error {
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	return c.send(appendCommand(nil, bs...), 1)
}

// reply reads one reply: its text for a simple string, error or bulk
// string (the elements of an array are read and dropped).
func (c *respConn) reply() (text []byte, isErr bool, err error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return nil, false, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, false, fmt.Errorf("redis: bad reply line %q", line)
	}
	body := line[1 : len(line)-2]
	switch line[0] {
	case '+', ':':
		return body, false, nil
	case '-':
		return bytes.Clone(body), true, nil
	case '$', '*':
		n, err := strconv.Atoi(string(body))
		if err != nil {
			return nil, false, fmt.Errorf("redis: bad length %q", line)
		}
		if n < 0 {
			return nil, false, nil
		}
		if line[0] == '*' {
			for range n {
				if _, _, err := c.reply(); err != nil {
					return nil, false, err
				}
			}
			return nil, false, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.br, buf); err != nil {
			return nil, false, err
		}
		return buf[:n], false, nil
	}
	return nil, false, fmt.Errorf("redis: unknown reply %q", line)
}

// info returns one field of INFO server.
func (c *respConn) info(field string) (string, error) {
	if _, err := c.nc.Write(appendCommand(nil, []byte("INFO"), []byte("server"))); err != nil {
		return "", err
	}
	text, isErr, err := c.reply()
	if err != nil {
		return "", err
	}
	if isErr {
		return "", redisError(text)
	}
	for _, line := range strings.Split(string(text), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v, nil
		}
	}
	return "?", nil
}
