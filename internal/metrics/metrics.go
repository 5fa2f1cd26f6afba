// Package metrics is buildlog's one use of the Prometheus client: the
// counters, gauges and histograms the server exports at GET /metrics, kept
// behind methods so the rest of the server never imports client_golang.
//
// Every Metrics has its own registry, so several servers in one test
// process do not collide; a nil *Metrics records nothing.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the server's instruments.
type Metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	appends         prometheus.Counter
	appendedEntries prometheus.Counter
	appendedBytes   prometheus.Counter
	appendDuration  prometheus.Histogram
	openStreams     *prometheus.GaugeVec
	followerLag     prometheus.Histogram
	storeErrors     *prometheus.CounterVec
	authFailures    *prometheus.CounterVec
	rejected        *prometheus.CounterVec
	revokedStreams  prometheus.Counter

	webhookDeliveries *prometheus.CounterVec
	webhookPending    prometheus.Gauge
	webhookOldest     prometheus.Gauge
	logOmitted        prometheus.Counter
}

// New returns a fresh set of instruments on their own registry, with the
// Go runtime and process collectors beside them.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := promauto.With(m.reg)
	m.requests = counterVec(f, "buildlog_http_requests_total", "HTTP requests answered, by route pattern and status code.", "route", "code")
	m.requestDuration = histogramVec(f, "buildlog_http_request_duration_seconds", "Time from request to the handler's return, by route pattern; for streams, the stream's life.",
		// From a cached read (~100µs) to a long stream (hours).
		[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60, 600, 3600}, "route")
	m.appends = counter(f, "buildlog_appends_total", "Append batches stored (a replayed idempotent retry is not counted).")
	m.appendedEntries = counter(f, "buildlog_appended_entries_total", "Log entries stored by appends.")
	m.appendedBytes = counter(f, "buildlog_appended_bytes_total", "Bytes of canonical entry JSON stored by appends.")
	m.appendDuration = histogram(f, "buildlog_append_duration_seconds", "Time the store took to commit an append durably.",
		[]float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5})
	m.openStreams = gaugeVec(f, "buildlog_open_streams", "Streams open now, by dialect (a, b).", "dialect")
	m.followerLag = histogram(f, "buildlog_follower_lag_entries", "Entries a following stream was behind each time it caught up (entries it read at once; a store read counts at most one page).",
		[]float64{0, 1, 10, 100, 1000, 10000, 100000})
	m.storeErrors = counterVec(f, "buildlog_store_errors_total", "Requests failed by the store (I/O, lost connection, full disk), answered 503, by route pattern.", "route")
	m.authFailures = counterVec(f, "buildlog_auth_failures_total", "Requests refused by authentication (401) or authorisation (403).", "reason")
	m.rejected = counterVec(f, "buildlog_rate_limited_total", "Requests answered 429, by limit (streams_per_key, streams_per_server, rate_per_key).", "limit")
	m.revokedStreams = counter(f, "buildlog_revoked_streams_total", "Open streams ended because their key was revoked.")
	m.logOmitted = counter(f, "buildlog_log_omitted_bytes_total", "Bytes of canonical entry lines the per-build size cap (--max-log-bytes) dropped.")
	m.webhookDeliveries = counterVec(f, "buildlog_webhook_deliveries_total", "Webhook delivery attempts this server made, by result: delivered (2xx), retrying (failed, another attempt is due), given_up (failed, past --webhook-max-age).", "result")
	m.webhookPending = gauge(f, "buildlog_webhook_queue_depth", "Webhook deliveries not yet delivered or given up, in the whole store (every server sharing it reports the same).")
	m.webhookOldest = gauge(f, "buildlog_webhook_oldest_pending_seconds", "Age of the oldest event still waiting for delivery; 0 when none waits.")
	// The series a dashboard expects exist from the start, at zero.
	for _, d := range []string{"a", "b"} {
		m.openStreams.WithLabelValues(d)
	}
	for _, r := range []string{"unauthorized", "forbidden"} {
		m.authFailures.WithLabelValues(r)
	}
	for _, r := range []string{"delivered", "retrying", "given_up"} {
		m.webhookDeliveries.WithLabelValues(r)
	}
	return m
}

// counter, counterVec, gauge, gaugeVec, histogram and histogramVec make an
// instrument registered through f, so none can be made and left out of the
// exposition.
func counter(f promauto.Factory, name, help string) prometheus.Counter {
	return f.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

func counterVec(f promauto.Factory, name, help string, labels ...string) *prometheus.CounterVec {
	return f.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

func gauge(f promauto.Factory, name, help string) prometheus.Gauge {
	return f.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
}

func gaugeVec(f promauto.Factory, name, help string, labels ...string) *prometheus.GaugeVec {
	return f.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}

func histogram(f promauto.Factory, name, help string, buckets []float64) prometheus.Histogram {
	return f.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
}

func histogramVec(f promauto.Factory, name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return f.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
}

// Handler serves the Prometheus text exposition.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Request records one answered request. route is the mux pattern, never
// the raw path, so ids do not become label values.
func (m *Metrics) Request(route string, code int, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.requestDuration.WithLabelValues(route).Observe(d.Seconds())
}

// Appended records a stored batch.
func (m *Metrics) Appended(entries, bytes int, d time.Duration) {
	if m == nil {
		return
	}
	m.appends.Inc()
	m.appendedEntries.Add(float64(entries))
	m.appendedBytes.Add(float64(bytes))
	m.appendDuration.Observe(d.Seconds())
}

// StreamOpened counts an open stream of dialect; call the result when it ends.
func (m *Metrics) StreamOpened(dialect string) func() {
	if m == nil {
		return func() {}
	}
	g := m.openStreams.WithLabelValues(dialect)
	g.Inc()
	return g.Dec
}

// FollowerLag records how many entries a follower read at once.
func (m *Metrics) FollowerLag(entries int) {
	if m == nil {
		return
	}
	m.followerLag.Observe(float64(entries))
}

// StoreError records a request the store failed.
func (m *Metrics) StoreError(route string) {
	if m == nil {
		return
	}
	m.storeErrors.WithLabelValues(route).Inc()
}

// AuthFailure records a 401 (reason "unauthorized") or 403 ("forbidden").
func (m *Metrics) AuthFailure(reason string) {
	if m == nil {
		return
	}
	m.authFailures.WithLabelValues(reason).Inc()
}

// RateLimited records a 429 and the limit that caused it.
func (m *Metrics) RateLimited(limit string) {
	if m == nil {
		return
	}
	m.rejected.WithLabelValues(limit).Inc()
}

// StreamRevoked records a stream ended by its key's revocation.
func (m *Metrics) StreamRevoked() {
	if m == nil {
		return
	}
	m.revokedStreams.Inc()
}

// WebhookAttempt records one delivery attempt and its result.
func (m *Metrics) WebhookAttempt(result string) {
	if m == nil {
		return
	}
	m.webhookDeliveries.WithLabelValues(result).Inc()
}

// WebhookQueue records the deliveries waiting and the age of the oldest.
func (m *Metrics) WebhookQueue(pending int, oldest time.Duration) {
	if m == nil {
		return
	}
	m.webhookPending.Set(float64(pending))
	m.webhookOldest.Set(oldest.Seconds())
}

// LogOmitted counts bytes the size cap dropped.
func (m *Metrics) LogOmitted(bytes int64) { m.logOmitted.Add(float64(bytes)) }
