package guard

import "net/netip"

// Privileged reports whether addr is trusted (guard.trusted_networks) or
// proven (a recent successful login from it, the exemption state): the
// sources that limits an attacker could fill must never hold back, as
// BackendSlotFor treats them. False on a nil Guard.
func (g *Guard) Privileged(addr netip.Addr) bool {
	if g == nil {
		return false
	}
	return g.privileged(normAddr(addr))
}
