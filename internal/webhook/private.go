package webhook

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"buildlog"
)

var (
	// sharedSpace is carrier-grade NAT space (RFC 6598), which clouds and
	// overlay networks use for internal addresses.
	sharedSpace = netip.MustParsePrefix("100.64.0.0/10")
	// thisNetwork: Linux connects 0.0.0.0 (and the rest of 0/8 is never a
	// public host) to the local machine.
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
)

// Private reports whether a is an address a hook may not target without
// --webhook-allow-private: loopback, private (RFC 1918, fc00::/7, and
// 100.64.0.0/10), link-local (169.254.0.0/16, fe80::/10, which holds cloud
// metadata services), unspecified, multicast or broadcast. IPv4 addresses
// written as IPv6 count as the IPv4 address.
func Private(a netip.Addr) bool {
	a = a.Unmap()
	return !a.IsGlobalUnicast() || a.IsPrivate() || sharedSpace.Contains(a) || thisNetwork.Contains(a)
}

// PrivateAddressError is a delivery refused because its host is a private
// address.
type PrivateAddressError struct {
	Host string // as the URL names it, when that is not the address
	Addr netip.Addr
}

func (e *PrivateAddressError) Error() string {
	what := e.Addr.String()
	if e.Host != "" && e.Host != what {
		what = e.Host + " (" + what + ")"
	}
	return "refused: " + what + " is a loopback, private or link-local address; hooks may target those only with --webhook-allow-private"
}

// resolveWait bounds the DNS lookup CheckTarget makes.
const resolveWait = 3 * time.Second

// CheckTarget refuses (invalid) a hook URL whose host is, or resolves to,
// a private address. A name that does not resolve now is let through: it
// may before the first event, and the check at delivery stands anyway.
func CheckTarget(ctx context.Context, u *url.URL) error {
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	refuse := func(a netip.Addr) error {
		return buildlog.Errorf(buildlog.EInvalid, "url: %s", (&PrivateAddressError{Host: host, Addr: a}).Error())
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if Private(a) {
			return refuse(a)
		}
		return nil
	}
	// Resolvers answer these without asking DNS (RFC 6761).
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return refuse(netip.IPv6Loopback())
	}
	ctx, cancel := context.WithTimeout(ctx, resolveWait)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if Private(a) {
			return refuse(a)
		}
	}
	return nil
}
