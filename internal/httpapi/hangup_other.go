//go:build !linux

package httpapi

import "net"

type hangups struct{}

var connHangups hangups

// watch is Linux's only; elsewhere each stream watches with a read of its
// own (detachedWriter.watch).
func (h *hangups) watch(net.Conn, func()) (stop func(), ok bool) { return nil, false }
