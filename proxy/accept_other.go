//go:build !linux

package proxy

import (
	"net"
	"net/netip"
)

// rawListener is Linux-only; elsewhere the guard is asked after Accept.
type rawListener struct{ net.Listener }

func newRawListener(net.Listener) *rawListener { return nil }

func (r *rawListener) acceptAdmitted(func(netip.AddrPort) bool) (net.Conn, netip.AddrPort, error) {
	panic("unreachable")
}
