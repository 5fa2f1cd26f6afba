// Package webhook delivers the build events the store records in its
// outbox: one signed POST per event and hook, retried with backoff until
// the receiver answers 2xx or the event is older than the maximum age.
// Deliveries are claimed from the store with a lease, so with several
// servers on one store each attempt is made by one of them.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"buildlog"
	"buildlog/internal/metrics"
)

// Defaults for a Deliverer's zero fields.
const (
	DefaultMaxAge     = 24 * time.Hour
	DefaultTimeout    = 10 * time.Second
	DefaultBackoff    = time.Second
	DefaultMaxBackoff = 10 * time.Minute
	DefaultPoll       = 250 * time.Millisecond
	DefaultWorkers    = 16
	DefaultPerHook    = 4
	// DefaultKeep is how long attempt records are kept for GET
	// /v1/webhooks/{id}/deliveries.
	DefaultKeep = 7 * 24 * time.Hour
)

// Deliverer sends pending deliveries until its context ends.
type Deliverer struct {
	Store   buildlog.Store
	Log     *slog.Logger
	Metrics *metrics.Metrics
	Now     func() time.Time

	// MaxAge is how long after its event a failing delivery is retried
	// before it is given up.
	MaxAge time.Duration
	// AllowPrivate lets deliveries go to loopback, private and link-local
	// addresses (--webhook-allow-private).
	AllowPrivate bool
	// Timeout is how long a receiver has to answer.
	Timeout time.Duration
	// Backoff is the wait after a first failed attempt; it doubles per
	// attempt, with jitter, up to MaxBackoff.
	Backoff, MaxBackoff time.Duration
	// Poll is how often the store is asked for due deliveries while none
	// are under way; it bounds the delay between an event and its first
	// attempt.
	Poll time.Duration
	// Workers bounds the attempts under way on this server; PerHook bounds
	// those to one hook, so a slow receiver holds at most PerHook workers
	// and every other hook keeps the rest.
	Workers, PerHook int
	// Lease is how long a claim lasts: longer than an attempt can take, so
	// that no other server starts the same one meanwhile. A server that
	// dies mid-attempt delays that delivery by up to this long.
	Lease time.Duration
	// Keep is how long attempt records are kept.
	Keep time.Duration
}

func (d *Deliverer) defaults() {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	set := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	set(&d.MaxAge, DefaultMaxAge)
	set(&d.Timeout, DefaultTimeout)
	set(&d.Backoff, DefaultBackoff)
	set(&d.MaxBackoff, DefaultMaxBackoff)
	set(&d.Poll, DefaultPoll)
	set(&d.Lease, 2*d.Timeout+10*time.Second)
	set(&d.Keep, DefaultKeep)
	if d.Workers <= 0 {
		d.Workers = DefaultWorkers
	}
	if d.PerHook <= 0 {
		d.PerHook = DefaultPerHook
	}
}

// statsEvery is how often the queue metrics are refreshed (a var for
// tests).
var statsEvery = 5 * time.Second

const (
	pruneEvery = 10 * time.Minute
	pruneBatch = 10000
	// storeWait bounds the store calls that end an attempt, which run even
	// while the server shuts down.
	storeWait = 5 * time.Second
	// storeRetry is the poll interval while claiming fails.
	storeRetry = 5 * time.Second
)

// Run delivers until ctx ends. Attempts under way then are cut short and
// their claims released, so the next server to look (or this one, after a
// restart) makes them at once; Run returns once that is done.
func (d *Deliverer) Run(ctx context.Context) {
	d.defaults()
	client := d.client()
	var (
		running  int // attempts under way, each in its own goroutine
		perHook  = map[string]int{}
		finished = make(chan string, d.Workers) // a worker's hook, when it ends
	)
	nextStats, nextPrune := time.Time{}, d.Now().Add(time.Minute)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			for ; running > 0; running-- {
				<-finished
			}
			return
		case h := <-finished:
			running--
			if perHook[h]--; perHook[h] <= 0 {
				delete(perHook, h)
			}
		case <-timer.C:
		}
		now := d.Now()
		wait := d.Poll
		if free := d.Workers - running; free > 0 {
			var full []string
			for h, n := range perHook {
				if n >= d.PerHook {
					full = append(full, h)
				}
			}
			ds, err := d.Store.ClaimDeliveries(ctx, now, d.Lease, free, full)
			if err != nil && ctx.Err() == nil {
				// The store is down or failing: ask again less often,
				// and log it once per try rather than four times a second.
				d.Log.Warn("webhooks: claiming deliveries failed", "err", err)
				wait = max(d.Poll, storeRetry)
			}
			for _, del := range ds {
				if perHook[del.HookID] >= d.PerHook {
					// Claimed beyond the hook's share in one go: hand it
					// back, due now, for a later round.
					d.release(ctx, del)
					continue
				}
				perHook[del.HookID]++
				running++
				go func() {
					defer func() { finished <- del.HookID }()
					d.attempt(ctx, client, del)
				}()
			}
		}
		if now.After(nextStats) {
			nextStats = now.Add(statsEvery)
			d.stats(ctx, now)
		}
		if now.After(nextPrune) {
			nextPrune = now.Add(pruneEvery)
			d.prune(ctx, now)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

func (d *Deliverer) stats(ctx context.Context, now time.Time) {
	q, err := d.Store.PendingDeliveries(ctx)
	if err != nil {
		return
	}
	var age time.Duration
	if !q.Oldest.IsZero() {
		age = max(now.Sub(q.Oldest), 0)
	}
	d.Metrics.WebhookQueue(q.Pending, age)
}

func (d *Deliverer) prune(ctx context.Context, now time.Time) {
	for {
		n, err := d.Store.PruneDeliveryAttempts(ctx, now.Add(-d.Keep), pruneBatch)
		if err != nil {
			if ctx.Err() == nil {
				d.Log.Warn("webhooks: pruning attempt records failed", "err", err)
			}
			return
		}
		if n < pruneBatch {
			return
		}
	}
}

// release hands a claimed delivery back, due now, without counting an
// attempt. A failure leaves the claim to run out by itself.
func (d *Deliverer) release(ctx context.Context, del *buildlog.Delivery) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeWait)
	defer cancel()
	if err := d.Store.RecordDelivery(ctx, del, nil, d.Now()); err != nil && buildlog.ErrorCode(err) != buildlog.EConflict {
		d.Log.Warn("webhooks: releasing a delivery failed; it is due again when its claim runs out",
			"hook_id", del.HookID, "event_id", del.EventID, "err", err)
	}
}

// attempt makes one attempt at del and records it.
func (d *Deliverer) attempt(ctx context.Context, client *http.Client, del *buildlog.Delivery) {
	start := d.Now()
	code, problem := d.post(ctx, client, del, start)
	if problem != "" && ctx.Err() != nil {
		// Cut short by shutdown: not the receiver's failure.
		d.release(ctx, del)
		return
	}
	a := &buildlog.DeliveryAttempt{Attempt: del.Attempt, StatusCode: code, Error: problem,
		DurationMS: d.Now().Sub(start).Milliseconds(), At: start.UTC().Truncate(time.Microsecond)}
	var retryAt time.Time
	switch {
	case problem == "":
		a.Result = buildlog.ResultDelivered
	default:
		next := d.Now().Add(d.delay(del.Attempt))
		if next.Sub(del.CreatedAt) > d.MaxAge {
			a.Result = buildlog.ResultGivenUp
		} else {
			a.Result, retryAt = buildlog.ResultRetrying, next
		}
	}
	// Recorded even while shutting down: the attempt was made.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeWait)
	defer cancel()
	err := d.Store.RecordDelivery(rctx, del, a, retryAt)
	d.Metrics.WebhookAttempt(a.Result)
	attrs := []any{"hook_id", del.HookID, "event_id", del.EventID, "event", del.Type, "build_id", del.BuildID,
		"attempt", del.Attempt, "result", a.Result}
	switch {
	case err != nil && buildlog.ErrorCode(err) == buildlog.EConflict:
		d.Log.Info("webhooks: delivery's hook deleted or claim lost meanwhile", attrs...)
	case err != nil:
		d.Log.Warn("webhooks: recording an attempt failed; the delivery is due again when its claim runs out",
			append(attrs, "err", err)...)
	case a.Result == buildlog.ResultGivenUp:
		d.Log.Warn("webhooks: delivery given up", append(attrs, "error", problem)...)
	case a.Result == buildlog.ResultRetrying:
		d.Log.Info("webhooks: delivery attempt failed", append(attrs, "error", problem, "retry_at", retryAt)...)
	default:
		d.Log.Debug("webhooks: delivered", attrs...)
	}
}

// delay is the wait after failed attempt n (from 1): Backoff·2ⁿ⁻¹ within
// ±25% jitter (so the retries of many events spread out), at most
// MaxBackoff.
func (d *Deliverer) delay(n int) time.Duration {
	w := d.Backoff
	for i := 1; i < n && w < d.MaxBackoff; i++ {
		w *= 2
	}
	w = min(w, d.MaxBackoff)
	return min(w*3/4+rand.N(w/2+1), d.MaxBackoff)
}

// post sends del; it returns the status code (0 without an answer) and,
// unless the receiver answered 2xx, what went wrong.
func (d *Deliverer) post(ctx context.Context, client *http.Client, del *buildlog.Delivery, at time.Time) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, d.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, del.URL, bytes.NewReader(del.Body))
	if err != nil {
		return 0, "bad hook URL: " + err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "buildlog-webhook/1")
	req.Header.Set("Buildlog-Event", del.Type)
	req.Header.Set("Buildlog-Delivery", del.EventID)
	req.Header.Set("Buildlog-Signature", Sign(del.Secret, at.Unix(), del.Body))
	res, err := client.Do(req)
	if err != nil {
		return 0, d.describe(err)
	}
	// Read a little so the connection can be reused; the answer's body
	// means nothing to us.
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	switch c := res.StatusCode; {
	case c >= 200 && c < 300:
		return c, ""
	case c >= 300 && c < 400:
		return c, fmt.Sprintf("HTTP %d: redirects are not followed", c)
	default:
		return c, fmt.Sprintf("HTTP %d", c)
	}
}

// describe renders a failed request for the attempt record.
func (d *Deliverer) describe(err error) string {
	var pe *PrivateAddressError
	switch {
	case errors.As(err, &pe):
		return pe.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer within " + d.Timeout.String()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// Sign is the Buildlog-Signature header of body sent at unix second t:
// t=<t>,v1=<hex HMAC-SHA256 with secret over "<t>.<body>">.
func Sign(secret string, t int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	ts := strconv.FormatInt(t, 10)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// client is the HTTP client of deliveries: no redirects, no proxy from the
// environment (it would hide the address actually dialled), and unless
// AllowPrivate, a dialer that refuses private addresses after DNS, so a
// name re-pointed since the hook was made is caught too.
func (d *Deliverer) client() *http.Client {
	dialer := &net.Dialer{Timeout: d.Timeout, KeepAlive: 30 * time.Second}
	if !d.AllowPrivate {
		dialer.Control = func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			if Private(ap.Addr()) {
				return &PrivateAddressError{Addr: ap.Addr()}
			}
			return nil
		}
	}
	return &http.Client{
		Transport: &http.Transport{
			DialContext:         dialer.DialContext,
			ForceAttemptHTTP2:   true,
			MaxIdleConns:        100,
			MaxIdleConnsPerHost: DefaultPerHook,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: d.Timeout,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
