package testkit

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy forwards TCP connections from a loopback address to a target
// (a test's server, the PostgreSQL server) and fails on purpose: it cuts
// every open connection, turns new ones away while it still listens, or
// stops listening altogether and later listens again on the same address,
// as a database that stops and restarts does.
type Proxy struct {
	Addr string // where it listens, host:port
	URL  string // "http://" + Addr

	target string

	mu      sync.Mutex
	ln      net.Listener // nil while down
	conns   map[net.Conn]bool
	refused bool
}

// NewProxy listens on a free loopback port and forwards to target
// (host:port); it is down, with every connection cut, when t ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, conns: map[net.Conn]bool{}}
	p.URL = "http://" + p.Addr
	p.serve(ln)
	t.Cleanup(p.Down)
	return p
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			refused := p.refused
			p.mu.Unlock()
			if refused {
				c.Close() // as unreachable as a server can be while listening
				continue
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.ln != ln { // taken down meanwhile
				p.mu.Unlock()
				c.Close()
				u.Close()
				return
			}
			p.conns[c], p.conns[u] = true, true
			p.mu.Unlock()
			go p.relay(c, u)
		}
	}()
}

// relay copies both ways until either side ends, then closes both.
func (p *Proxy) relay(c, u net.Conn) {
	done := make(chan struct{}, 2)
	go func() { io.Copy(u, c); done <- struct{}{} }()
	go func() { io.Copy(c, u); done <- struct{}{} }()
	<-done
	c.Close()
	u.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, u)
	p.mu.Unlock()
}

// Cut closes every open connection; new ones are forwarded as before.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// Refuse, while on, accepts connections and closes them at once, and
// cuts the open ones when it is turned on.
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refused = on
	p.mu.Unlock()
	if on {
		p.Cut()
	}
}

// Down stops listening and cuts every open connection.
func (p *Proxy) Down() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	p.mu.Unlock()
	p.Cut()
}

// Up listens again on the same address, retrying for a while as the port
// may take a moment to be free again.
func (p *Proxy) Up(t testing.TB) {
	t.Helper()
	var err error
	for range 100 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", p.Addr); err == nil {
			p.serve(ln)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("proxy: listen again on %s: %v", p.Addr, err)
}
