package buildlog

import (
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Event types a webhook may take.
const (
	// EventBuildStarted: the first append moved a queued build to building.
	EventBuildStarted = "build.started"
	// EventBuildFinished: the build reached a terminal status, by its
	// producer's finish or the idle sweep's timeout.
	EventBuildFinished = "build.finished"
)

// EventTypes lists every event type, in the order they happen.
var EventTypes = []string{EventBuildStarted, EventBuildFinished}

// Webhook is a team's subscription to its builds' events. Secret signs
// every delivery; it is shown once, at creation, and never listed.
type Webhook struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Events    []string  `json:"events"`
	Team      string    `json:"team"`
	CreatedAt time.Time `json:"created_at"`
	Secret    string    `json:"-"`
}

// Takes reports whether the hook subscribes to events of type typ.
func (h *Webhook) Takes(typ string) bool { return slices.Contains(h.Events, typ) }

// CreatedWebhook is a hook as its creation answers it, server and client
// alike: the only time its signing secret is shown.
type CreatedWebhook struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Events    []string  `json:"events"`
	Team      string    `json:"team"`
	Secret    string    `json:"secret"`
	CreatedAt time.Time `json:"created_at"`
}

// NewWebhook is a create-webhook request as a client sends it.
type NewWebhook struct {
	URL    string   `json:"url"`
	Events []string `json:"events"`
	Team   *string  `json:"team"`
}

// MaxWebhookURL bounds a hook URL's length.
const MaxWebhookURL = 2048

// ParseWebhookURL checks that s is an absolute http:// or https:// URL
// with a host.
func ParseWebhookURL(s string) (*url.URL, error) {
	bad := func(why string) error { return Errorf(EInvalid, "url: %s", why) }
	if s == "" {
		return nil, bad("required; want an http:// or https:// URL")
	}
	if len(s) > MaxWebhookURL {
		return nil, bad("over 2048 bytes")
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, bad("contains spaces or control characters")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, bad("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, bad("want an http:// or https:// URL")
	}
	if u.Hostname() == "" || u.Opaque != "" {
		return nil, bad("has no host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, bad("want a port from 1 to 65535")
		}
	}
	return u, nil
}

// WebhookSecretPrefix starts every hook secret, so a leaked one is
// recognisable.
const WebhookSecretPrefix = "whsec_"

// NewWebhookSecret returns a fresh signing secret and a hook id.
func NewWebhookSecret() (secret, id string) {
	return newSecret(WebhookSecretPrefix, "wh_")
}

// NewEventID returns a fresh event id: what receivers de-duplicate by.
func NewEventID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return "evt_" + hex.EncodeToString(b)
}

// Delivery is one event due to one hook, as a store hands it to a
// deliverer with ClaimDeliveries.
type Delivery struct {
	// Seq and Claim identify the claim to RecordDelivery.
	Seq   int64
	Claim string

	EventID   string
	Type      string
	BuildID   string
	CreatedAt time.Time // when the event happened
	Body      []byte    // EventBody, the same on every attempt

	HookID string
	URL    string
	Secret string

	// Attempt is the number of the attempt about to be made, from 1.
	Attempt int
}

// Delivery results, as recorded and as counted in metrics.
const (
	ResultDelivered = "delivered" // the receiver answered 2xx
	ResultRetrying  = "retrying"  // it failed; another attempt is due
	ResultGivenUp   = "given_up"  // it failed, and the event is past its maximum age
)

// DeliveryAttempt is the record of one attempt, as GET
// /v1/webhooks/{id}/deliveries lists it. ID is the event id, the same on
// every attempt at one event (it is the Buildlog-Delivery header).
type DeliveryAttempt struct {
	ID         string    `json:"id"`
	Event      string    `json:"event"`
	BuildID    string    `json:"build_id"`
	Attempt    int       `json:"attempt"`
	StatusCode int       `json:"status_code,omitempty"` // absent when no answer came
	Error      string    `json:"error,omitempty"`
	Result     string    `json:"result"`
	DurationMS int64     `json:"duration_ms"`
	At         time.Time `json:"at"`

	HookID string `json:"-"`
}

// DeliveryQueue describes the deliveries waiting: how many, and when the
// oldest one's event happened (zero when none wait).
type DeliveryQueue struct {
	Pending int
	Oldest  time.Time
}

// NewDeliveryClaim returns a fresh claim token for ClaimDeliveries.
func NewDeliveryClaim() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
