package metrics_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"buildlog/internal/metrics"
)

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(w.Result().Body)
	return string(b)
}

func TestExposition(t *testing.T) {
	m := metrics.New()
	m.Request("GET /x", 200, 3*time.Millisecond)
	m.Appended(5, 700, time.Millisecond)
	done := m.StreamOpened("b")
	m.FollowerLag(12)
	m.StoreError("POST /y")
	m.AuthFailure("forbidden")
	m.RateLimited("rate_per_key")
	m.StreamRevoked()
	m.WebhookAttempt("retrying")
	m.WebhookQueue(3, 90*time.Second)
	body := scrape(t, m)
	for _, want := range []string{
		`buildlog_http_requests_total{code="200",route="GET /x"} 1`,
		`buildlog_appended_entries_total 5`,
		`buildlog_appended_bytes_total 700`,
		`buildlog_open_streams{dialect="b"} 1`,
		`buildlog_follower_lag_entries_bucket{le="100"} 1`,
		`buildlog_store_errors_total{route="POST /y"} 1`,
		`buildlog_auth_failures_total{reason="forbidden"} 1`,
		`buildlog_auth_failures_total{reason="unauthorized"} 0`,
		`buildlog_rate_limited_total{limit="rate_per_key"} 1`,
		`buildlog_revoked_streams_total 1`,
		`buildlog_webhook_deliveries_total{result="retrying"} 1`,
		`buildlog_webhook_deliveries_total{result="delivered"} 0`,
		`buildlog_webhook_queue_depth 3`,
		`buildlog_webhook_oldest_pending_seconds 90`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
	done()
	if !strings.Contains(scrape(t, m), `buildlog_open_streams{dialect="b"} 0`) {
		t.Error("gauge not back to 0")
	}
	// Separate instances do not share counts (one per server in tests).
	if strings.Contains(scrape(t, metrics.New()), `buildlog_appended_entries_total 5`) {
		t.Error("instances share a registry")
	}
}

// A nil *Metrics records nothing and does not panic, so the API runs without.
func TestNilMetrics(t *testing.T) {
	var m *metrics.Metrics
	m.Request("r", 200, 0)
	m.Appended(1, 1, 0)
	m.StreamOpened("a")()
	m.FollowerLag(1)
	m.StoreError("r")
	m.AuthFailure("forbidden")
	m.RateLimited("x")
	m.StreamRevoked()
	m.WebhookAttempt("delivered")
	m.WebhookQueue(1, time.Second)
}
