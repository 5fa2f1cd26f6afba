package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"buildlog"
	"buildlog/internal/wire"
)

// WriterOptions tune a Writer; zero fields take the defaults shown.
type WriterOptions struct {
	// FlushInterval is the longest an entry waits before it is sent
	// (200 ms), unless MaxBatch entries are waiting first.
	FlushInterval time.Duration
	// MaxBatch is the most entries in one append (1000); MaxBatchBytes
	// bounds its size in message bytes (1 MiB), well under the server's
	// --max-body.
	MaxBatch      int
	MaxBatchBytes int
	// MaxBuffered and MaxBufferedBytes bound what is held while the server
	// is slow or unreachable (10,000 entries, 8 MiB of messages): beyond
	// them Add blocks, pushing back on the producer, rather than grow or
	// drop anything.
	MaxBuffered      int
	MaxBufferedBytes int
	// MaxMessage is the longest message sent as one entry (64 KiB, the
	// server's default --max-message); longer ones are split.
	MaxMessage int
	// OnRetry, when set, hears each failed append that will be retried.
	OnRetry func(err error, wait time.Duration)
}

func (o *WriterOptions) defaults() {
	if o.FlushInterval <= 0 {
		o.FlushInterval = 200 * time.Millisecond
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1000
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = 1 << 20
	}
	if o.MaxBuffered <= 0 {
		o.MaxBuffered = 10000
	}
	if o.MaxBufferedBytes <= 0 {
		o.MaxBufferedBytes = 8 << 20
	}
	if o.MaxMessage <= 0 {
		o.MaxMessage = buildlog.DefaultMaxMessage
	}
}

// Writer batches entries into appends to one build: an entry is sent at
// most FlushInterval after it was added, or sooner when MaxBatch entries
// are waiting. Batches go one at a time, in order, each with its
// first_offset; while the server is unreachable or failing (429, 5xx) the
// Writer retries the same batch with backoff, so entries are neither lost,
// reordered nor stored twice. A refusal (a 4xx other than 429) stops it for
// good: Add, Flush and Close then return that error.
//
// A Writer is safe for concurrent use; entries added from several
// goroutines are stored in the order Add was called.
type Writer struct {
	c  *Client
	id string
	o  WriterOptions

	mu         sync.Mutex
	queue      []buildlog.Entry // added, not yet acknowledged, oldest first
	queueBytes int
	oldest     time.Time // when queue[0] was added
	added      uint64    // entries ever added
	acked      uint64    // entries acknowledged by the server
	flushTo    uint64    // send without waiting until acked reaches this
	next       uint64    // the offset the next batch starts at
	err        error     // permanent failure
	lastErr    error     // the latest failed attempt, for Close's report
	changed    chan struct{}

	kick   chan struct{} // wakes the sender early
	cancel context.CancelFunc
	ctx    context.Context // the sender's; cancelled by Close
	done   chan struct{}   // the sender has returned
	once   sync.Once
}

// NewWriter starts a Writer appending to buildID at its current end (read
// from the server, retrying while it cannot be reached until ctx ends).
// Close it to deliver what is buffered.
func (c *Client) NewWriter(ctx context.Context, buildID string, o WriterOptions) (*Writer, error) {
	var b *buildlog.Build
	err := c.retry(ctx, func() (err error) { b, err = c.Build(ctx, buildID); return err })
	if err != nil {
		return nil, err
	}
	if b.Status.Terminal() {
		return nil, buildlog.Errorf(buildlog.EConflict, "build %s is %s; its log is sealed", buildID, b.Status)
	}
	o.defaults()
	w := &Writer{c: c, id: buildID, o: o, next: b.NextOffset,
		changed: make(chan struct{}), kick: make(chan struct{}, 1), done: make(chan struct{})}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.send()
	return w, nil
}

// notify wakes everyone waiting for a change; mu must be held.
func (w *Writer) notify() {
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *Writer) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Add queues e (split in several entries when its message is longer than
// MaxMessage). An empty Timestamp is set to now, so the entry keeps the
// time it was produced however long delivery takes. Add blocks while the
// buffer is full, until there is room or ctx ends.
func (w *Writer) Add(ctx context.Context, e buildlog.Entry) error {
	if e.Timestamp == "" {
		e.Timestamp = buildlog.Timestamp(time.Now())
	}
	parts := SplitMessage(e.Message, w.o.MaxMessage)
	for _, m := range parts {
		p := e
		p.Message = m
		if err := w.add(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

func (w *Writer) add(ctx context.Context, e buildlog.Entry) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		if w.err != nil {
			return w.err
		}
		if w.ctx.Err() != nil {
			return errors.New("buildlog client: Add after Close")
		}
		if len(w.queue) == 0 || (len(w.queue) < w.o.MaxBuffered && w.queueBytes+len(e.Message) <= w.o.MaxBufferedBytes) {
			break
		}
		ch := w.changed
		w.mu.Unlock()
		w.wake() // full: no reason to wait for the interval
		select {
		case <-ch:
		case <-ctx.Done():
			w.mu.Lock()
			return ctx.Err()
		}
		w.mu.Lock()
	}
	if len(w.queue) == 0 {
		w.oldest = time.Now()
	}
	w.queue = append(w.queue, e)
	w.queueBytes += len(e.Message)
	w.added++
	if len(w.queue) >= w.o.MaxBatch {
		w.wake()
	}
	return nil
}

// AddLines adds one entry per line read from r until EOF, each a copy of
// tmpl with the line (without its line ending) as the message. A line
// longer than MaxMessage is split, never dropped; a last line without a
// newline is still added. It returns r's error, if any, other than EOF.
func (w *Writer) AddLines(ctx context.Context, r io.Reader, tmpl buildlog.Entry) error {
	s := NewLineSplitter(w.o.MaxMessage, func(line string) error {
		e := tmpl
		e.Timestamp = ""
		e.Message = line
		return w.Add(ctx, e)
	})
	br := bufio.NewReaderSize(r, 32<<10)
	buf := make([]byte, 32<<10)
	for {
		n, err := br.Read(buf)
		if n > 0 {
			if _, werr := s.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return s.Close()
		}
		if err != nil {
			s.Close()
			return err
		}
	}
}

// Flush waits until every entry added before it was called is stored,
// sending at once rather than after FlushInterval.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	target := w.added
	w.flushTo = max(w.flushTo, target)
	w.mu.Unlock()
	w.wake()
	for {
		w.mu.Lock()
		acked, err, ch := w.acked, w.err, w.changed
		w.mu.Unlock()
		if acked >= target {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return w.undelivered(ctx.Err())
		}
	}
}

// undelivered describes what a Flush that gave up leaves behind.
func (w *Writer) undelivered(cause error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.added - w.acked
	if w.lastErr != nil {
		return fmt.Errorf("%d log entries not delivered: %w (last attempt: %v)", n, cause, w.lastErr)
	}
	return fmt.Errorf("%d log entries not delivered: %w", n, cause)
}

// Close delivers what is buffered, waiting until ctx ends, then stops the
// Writer. Its error says how many entries were not delivered, if any.
func (w *Writer) Close(ctx context.Context) error {
	err := w.Flush(ctx)
	w.once.Do(func() {
		w.cancel()
		<-w.done
	})
	return err
}

// Offset is the build's next offset as far as this Writer knows: where
// its next batch goes.
func (w *Writer) Offset() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.next
}

// send is the Writer's one sender: it owns the order of batches.
func (w *Writer) send() {
	defer close(w.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		w.mu.Lock()
		n, wait := len(w.queue), time.Duration(0)
		if n > 0 && n < w.o.MaxBatch && w.acked >= w.flushTo {
			wait = time.Until(w.oldest.Add(w.o.FlushInterval))
		}
		w.mu.Unlock()
		if n == 0 || wait > 0 {
			if n > 0 {
				timer.Reset(wait)
			}
			select {
			case <-w.kick:
			case <-timer.C:
			case <-w.ctx.Done():
				return
			}
			timer.Stop()
			continue
		}
		if !w.sendBatch() {
			return
		}
	}
}

// sendBatch sends the oldest entries until they are stored; false when
// the Writer must stop (closed, or refused for good).
func (w *Writer) sendBatch() bool {
	w.mu.Lock()
	limit := min(len(w.queue), w.o.MaxBatch)
	w.mu.Unlock()
	for attempt := 0; ; {
		w.mu.Lock()
		k, size := 0, 0
		for k < limit && (k == 0 || size+len(w.queue[k].Message) <= w.o.MaxBatchBytes) {
			size += len(w.queue[k].Message)
			k++
		}
		batch, first := w.queue[:k:k], w.next
		w.mu.Unlock()

		res, err := w.c.appendOnceEntries(w.ctx, w.id, first, batch)
		if err == nil {
			w.mu.Lock()
			clear(w.queue[:k]) // let the messages be collected
			w.queue = w.queue[k:]
			// oldest stays: the entries left were added after it, so the
			// interval only ever ends early for them, never late.
			w.queueBytes -= size
			w.acked += uint64(k)
			w.next = res.NextOffset
			w.notify()
			w.mu.Unlock()
			return true
		}
		if w.ctx.Err() != nil {
			return false
		}
		var be *buildlog.Error
		switch {
		case errors.As(err, &be) && be.Code == buildlog.EConflict && be.NextOffset != nil && *be.NextOffset > first:
			// Someone else appended at first. Our batch is not there (a
			// stored repeat would have been answered 200), so it goes after
			// theirs: nothing lost, nothing twice.
			w.mu.Lock()
			w.next = *be.NextOffset
			w.mu.Unlock()
			continue
		case errors.As(err, &be) && be.Code == buildlog.ETooLarge && k > 1:
			limit = k / 2 // the server's limits are lower than ours
			continue
		case !Retryable(err):
			w.mu.Lock()
			w.err = err
			w.notify()
			w.mu.Unlock()
			return false
		}
		d := w.c.Backoff.Delay(attempt)
		if ra := retryAfter(err); ra > d {
			d = ra
		}
		attempt++
		w.mu.Lock()
		w.lastErr = err
		w.mu.Unlock()
		if w.o.OnRetry != nil {
			w.o.OnRetry(err, d)
		}
		if sleep(w.ctx, d) != nil {
			return false
		}
	}
}

// appendOnceEntries is one attempt at Append.
func (c *Client) appendOnceEntries(ctx context.Context, buildID string, first uint64, entries []buildlog.Entry) (buildlog.AppendResult, error) {
	var res buildlog.AppendResult
	body, err := wire.AppendBody(nil, first, entries)
	if err != nil {
		return res, err
	}
	err = c.appendOnce(ctx, buildID, body, &res)
	return res, err
}
