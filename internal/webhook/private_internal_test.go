package webhook

import (
	"net/netip"
	"testing"
	"time"
)

func TestPrivate(t *testing.T) {
	for _, tt := range []struct {
		addr    string
		private bool
	}{
		{"127.0.0.1", true}, {"127.9.9.9", true}, {"::1", true},
		{"10.0.0.1", true}, {"172.16.5.4", true}, {"172.31.255.255", true}, {"192.168.0.1", true}, {"fd12::1", true},
		{"169.254.169.254", true}, {"fe80::1", true}, {"100.64.0.1", true}, {"100.127.255.254", true},
		{"0.0.0.0", true}, {"0.1.2.3", true}, {"::", true}, {"224.0.0.1", true}, {"ff02::1", true}, {"255.255.255.255", true},
		{"::ffff:127.0.0.1", true}, {"::ffff:10.0.0.1", true},
		{"93.184.215.14", false}, {"8.8.8.8", false}, {"172.32.0.1", false}, {"100.128.0.1", false},
		{"2606:4700::1111", false}, {"::ffff:8.8.8.8", false},
	} {
		if got := Private(netip.MustParseAddr(tt.addr)); got != tt.private {
			t.Errorf("Private(%s) = %v, want %v", tt.addr, got, tt.private)
		}
	}
}

// Retry delays double from Backoff, within ±25%, up to MaxBackoff.
func TestDelay(t *testing.T) {
	d := &Deliverer{}
	d.defaults()
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 8: 128 * time.Second} {
		for range 100 {
			if got := d.delay(n); got < want*3/4 || got > want*5/4 {
				t.Fatalf("delay(%d) = %v, want %v ± 25%%", n, got, want)
			}
		}
	}
	// From the 11th on, 2ⁿ⁻¹ s is past the cap: the jitter then only
	// shortens.
	for _, n := range []int{11, 12, 50, 1000} {
		for range 100 {
			if got := d.delay(n); got > DefaultMaxBackoff || got < DefaultMaxBackoff*3/4 {
				t.Fatalf("delay(%d) = %v, want at most %v and near it", n, got, DefaultMaxBackoff)
			}
		}
	}
}

func TestSign(t *testing.T) {
	// The example in docs/API.md.
	got := Sign("whsec_example", 1773705600, []byte(`{"id":"evt_1"}`))
	want := "t=1773705600,v1=" + docExampleMAC
	if got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
}

// docExampleMAC is what the shell example in docs/API.md prints:
// printf '%s' '1773705600.{"id":"evt_1"}' | openssl dgst -sha256 -hmac whsec_example -hex
const docExampleMAC = "815043d85d201879370624c3c57109b8e8f7358f6f2d4e8978c674c5d3fceab0"
