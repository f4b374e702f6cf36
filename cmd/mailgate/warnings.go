package main

import (
	"log/slog"
	"net"
	"net/netip"

	"github.com/mailgate/mailgate/geo"
)

// startWarnings logs every warning about the configuration itself that
// serve gives at start-up. check-config calls it too, so that what serve
// would warn about is seen before the switch-over (issue #22 item 7).
// Warnings from opening databases, policy files and certificates come
// from buildState and tlsconf, which both commands run.
func startWarnings(log *slog.Logger, cfg *Config, st *state) {
	warnStaleGeo(log, st)
	addrs := make([]string, len(cfg.Listeners))
	for i, l := range cfg.Listeners {
		addrs[i] = l.Address
	}
	warnIPv4Only(log, st.geo, addrs)
	if cfg.Admin.AllowInsecure {
		for _, p := range adminInsecurities(cfg.Admin) {
			log.Warn("admin.allow_insecure accepts: " + p)
		}
	}
	if a := cfg.Admin.Address; a != "off" && cfg.Admin.TokenFile != "" && !isLoopbackHostPort(a) {
		// The token guards only the endpoints that change something.
		log.Warn("admin.address is reachable from other hosts: /metrics, /readyz and /healthz answer without the token; "+
			"keep the port to your monitoring network with a firewall", "address", a)
	}
}

// warnIPv4Only repeats the original setup's mistake out loud: an
// IPv4-only database refuses every IPv6 client as "wrong country".
func warnIPv4Only(log *slog.Logger, g *geo.DB, addrs []string) {
	if !listensOnIPv6(addrs) {
		return
	}
	for _, f := range g.IPv4Only() {
		log.Warn("geo database has no IPv6 data but mailgate listens on IPv6: IPv6 clients will not be placed in a country",
			"file", f)
	}
}

// listensOnIPv6 reports whether a listen address (host:port as in the
// config) takes IPv6 clients: an IPv6 address, or a wildcard ("", "::",
// and "0.0.0.0", which Go's "tcp" listener opens dual-stack as well).
// A host name is not resolved; it is taken as IPv4.
func listensOnIPv6(addrs []string) bool {
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if host == "" {
			return true
		}
		ip, err := netip.ParseAddr(host)
		if err == nil && (ip.Is6() && !ip.Is4In6() || ip.IsUnspecified()) {
			return true
		}
	}
	return false
}
