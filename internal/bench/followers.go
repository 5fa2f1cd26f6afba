package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// followersPerKey spreads followers over read keys when the bench targets
// a server it did not start, whose --max-streams-per-key it cannot set.
const followersPerKey = 500

// crowd is the followers of fan-out and farm (dialect A, follow=true),
// each reading its stream to the end and measuring append→delivery on
// every stamped entry into lat.
type crowd struct {
	lat   hist
	fails failures

	cancel    context.CancelFunc
	ended     sync.WaitGroup
	closeIdle func()
}

// follow connects n followers, follower i to url(i) with one of keys, and
// returns once each has connected or failed to; if any failed, it stops
// them all and says so. Each then reads its stream and, once it ends,
// calls done with the entries it read and the error that ended it (nil
// at the stream's end; a failure unless stop ended it). Followers dial
// a few at a time: a burst of thousands of dials overflows the listen
// backlog and measures SYN retries.
func follow(ctx context.Context, n int, url func(i int) string, keys []followerKey, done func(i int, entries int64, err error)) (*crowd, error) {
	cr := &crowd{}
	hc, closeIdle := followerClient()
	fctx, cancel := context.WithCancel(ctx)
	cr.cancel, cr.closeIdle = cancel, closeIdle
	var connected sync.WaitGroup
	gate := make(chan struct{}, 32)
	connected.Add(n)
	cr.ended.Add(n)
	for i := range n {
		gate <- struct{}{}
		go func() {
			defer cr.ended.Done()
			f := follower{hc: hc, url: url(i), key: keys[i/followersPerKey%len(keys)].secret, lat: &cr.lat}
			body, err := f.connect(fctx)
			<-gate
			if err != nil {
				cr.fails.add(err)
				connected.Done()
				return
			}
			connected.Done()
			defer body.Close()
			got, err := f.read(body)
			if err != nil && fctx.Err() == nil {
				cr.fails.add(err)
			}
			done(i, got, err)
		}()
	}
	connected.Wait()
	if failed, first := cr.fails.get(); failed > 0 {
		cr.stop()
		return nil, fmt.Errorf("%d of %d followers failed to connect: %v", failed, n, first)
	}
	return cr, nil
}

// wait waits up to d for every stream to end, then ends those still open.
func (cr *crowd) wait(d time.Duration) {
	ended := make(chan struct{})
	go func() { cr.ended.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(d):
		cr.cancel()
		<-ended
	}
}

// stop ends every follower and waits for them: however a scenario
// returns, no follower outlives it.
func (cr *crowd) stop() {
	cr.cancel()
	cr.ended.Wait()
	cr.closeIdle()
}

// followerClient is the HTTP client of many followers: a connection each,
// never pooled, with small buffers, so the bench's own memory stays small
// beside the server's.
func followerClient() (*http.Client, func()) {
	tr := &http.Transport{
		DialContext:        (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
		DisableKeepAlives:  true,
		DisableCompression: true,
		ReadBufferSize:     4 << 10,
		WriteBufferSize:    1 << 10,
	}
	return &http.Client{Transport: tr}, tr.CloseIdleConnections
}

// failures counts followers' errors and keeps the first.
type failures struct {
	mu    sync.Mutex
	n     int
	first error
}

func (f *failures) add(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		f.first = err
	}
	f.n++
}

func (f *failures) get() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n, f.first
}

type followerKey struct{ id, secret string }

// followerKeys returns the keys followers use: the server's own key when
// the bench set its stream limit, else one read key per followersPerKey
// followers (made with the admin key, revoked after), so a server's
// default --max-streams-per-key does not refuse them.
func (r *runner) followerKeys(ctx context.Context, c *client, srv *server, F int) ([]followerKey, error) {
	if r.cfg.URL == "" {
		return []followerKey{{secret: srv.Key}}, nil
	}
	var keys []followerKey
	for i := 0; i < F; i += followersPerKey {
		id, secret, err := c.createKey(ctx, fmt.Sprintf("bench-follower-%d", i/followersPerKey))
		if err != nil {
			if i == 0 {
				r.progress("fanout: cannot make read keys (%v); all followers use --key", err)
				return []followerKey{{secret: srv.Key}}, nil
			}
			return keys, err
		}
		keys = append(keys, followerKey{id, secret})
	}
	return keys, nil
}

// revokeFollowerKeys revokes the read keys followerKeys made, even once
// ctx is done.
func revokeFollowerKeys(ctx context.Context, c *client, keys []followerKey) {
	for _, k := range keys {
		if k.id != "" {
			c.deleteKey(context.WithoutCancel(ctx), k.id)
		}
	}
}

// checkFiles fails early, with a clear message, when this process may not
// open the sockets a scenario of F followers (or producers) needs: own
// for the bench's side, and served more when it serves from this process.
func (r *runner) checkFiles(F, own, served int) error {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		return nil
	}
	sockets := own
	if r.cfg.URL == "" && len(r.cfg.ServeCommand) == 0 {
		sockets += served
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil
	}
	if need := uint64(sockets) + 200; lim.Cur < need {
		return fmt.Errorf("--followers %d needs %d open files here; the limit is %d (raise it with ulimit -n, or serve from a child process)", F, need, lim.Cur)
	}
	return nil
}

// follower is one reader of a live build.
type follower struct {
	hc  *http.Client
	url string
	key string
	lat *hist
}

func (f *follower) connect(ctx context.Context) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", f.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+f.key)
	resp, err := f.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		return nil, fmt.Errorf("follow: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return resp.Body, nil
}

var (
	idPrefix   = []byte("id: ")
	dataPrefix = []byte("data: ")
	markBytes  = []byte(sentMark)
)

// read consumes the stream to its end, checking ids are 0, 1, 2, … and
// recording each stamped entry's delay. It reads lines with a small
// buffer rather than the full SSE parser: ten thousand followers share
// two cores with the server being measured.
func (f *follower) read(body io.Reader) (int64, error) {
	br := bufio.NewReaderSize(body, 4<<10)
	var n int64
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
		switch {
		case bytes.HasPrefix(line, idPrefix):
			id, perr := strconv.ParseInt(string(bytes.TrimSpace(line[len(idPrefix):])), 10, 64)
			if perr != nil || id != n {
				return n, fmt.Errorf("follower got id %q, want %d", bytes.TrimSpace(line), n)
			}
			n++
		case bytes.HasPrefix(line, dataPrefix):
			now := time.Now()
			if i := bytes.Index(line, markBytes); i >= 0 {
				rest := line[i+len(markBytes):]
				j := bytes.IndexByte(rest, ' ')
				if j < 0 {
					break
				}
				if ns, err := strconv.ParseInt(string(rest[:j]), 10, 64); err == nil {
					f.lat.record(now.Sub(time.Unix(0, ns)))
				}
			}
		}
	}
}
