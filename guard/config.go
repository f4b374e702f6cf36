package guard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/mailgate/mailgate/geo"
)

// Config is the `guard:` section of mailgate's config file. Start from
// Defaults and decode the file over it: a zero threshold or limit that is
// written in the file switches that action off, it does not mean "default".
// docs/bruteforce.md explains every key and a recommended starting point.
type Config struct {
	// Window is how long a failure counts against an address, a network
	// and a (login, address) pair.
	Window time.Duration `yaml:"window"`
	// IPv4Prefix is the network an IPv4 address is counted and banned in
	// (24: one customer or one hosting subnet).
	IPv4Prefix int `yaml:"ipv4_prefix"`
	// IPv6Prefixes are the networks an IPv6 address is counted and banned
	// in. /64 is one LAN (RFC 4291 2.5.1 interface identifiers); /48 is
	// one site (RFC 6177), the span an attacker rotates within cheaply.
	IPv6Prefixes []int `yaml:"ipv6_prefixes"`
	// TrustedNetworks (CIDRs or addresses) are never banned, locked out
	// or refused by connection or deny rules; they are only slowed down.
	TrustedNetworks []string `yaml:"trusted_networks"`
	// DenyNetworks (CIDRs or addresses) are refused at accept, before
	// TLS, for everyone.
	DenyNetworks []string `yaml:"deny_networks"`
	// DenyCountries (ISO 3166-1 alpha-2) are refused at accept for
	// everyone. Needs Options.Country.
	DenyCountries []string `yaml:"deny_countries"`

	Tarpit      TarpitConfig      `yaml:"tarpit"`
	Ban         BanConfig         `yaml:"ban"`
	Lockout     LockoutConfig     `yaml:"lockout"`
	Exemption   ExemptionConfig   `yaml:"exemption"`
	Connections ConnectionsConfig `yaml:"connections"`
	Backend     BackendConfig     `yaml:"backend"`
	Compromise  CompromiseConfig  `yaml:"compromise"`
	// FailurePenalty is the backend's per-source penalty that failure
	// replies are padded to (docs/bruteforce.md, "No oracle").
	FailurePenalty PenaltyConfig `yaml:"failure_penalty"`

	// StateFile keeps bans, lockouts, escalation history, exemptions and
	// where each login last succeeded across restarts. Empty: memory only.
	StateFile string `yaml:"state_file"`
	// FingerprintSecretFile holds the secret (at least 16 bytes) that
	// keys password fingerprints on AUTHFAILED lines. Empty: none.
	FingerprintSecretFile string `yaml:"fingerprint_secret_file"`
	// MaxTracked bounds every in-memory table (failure counters, bans,
	// exemptions, ...); past it the least recently updated key goes.
	MaxTracked int `yaml:"max_tracked"`
	// Shared is the store a fleet of nodes shares (docs/fleet.md).
	Shared SharedConfig `yaml:"shared"`
}

// SharedConfig is `guard.shared`: Redis or Valkey shared by several
// mailgate nodes (package fleet, docs/fleet.md). No addresses: off.
type SharedConfig struct {
	// Addresses are host:port of the server (standalone: the first one
	// is used) or of the Sentinels (SentinelMaster set).
	Addresses []string `yaml:"addresses"`
	// SentinelMaster is the master name the Sentinels monitor; empty:
	// a standalone server.
	SentinelMaster string `yaml:"sentinel_master"`
	// Username and PasswordFile authenticate (ACL user); both empty: none.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// SentinelPasswordFile authenticates to the Sentinels; empty: none.
	SentinelPasswordFile string `yaml:"sentinel_password_file"`
	// TLS to the store, verified with CAFile (empty: the system's CAs).
	TLS    bool   `yaml:"tls"`
	CAFile string `yaml:"ca_file"`
	// DB is the database number.
	DB int `yaml:"db"`
	// KeyPrefix starts every key mailgate writes.
	KeyPrefix string `yaml:"key_prefix"`
	// HashKeyFile holds the fleet's secret (at least 16 bytes) that keys
	// the hashes of wrong passwords, the same file on every node.
	HashKeyFile string `yaml:"hash_key_file"`
	// FailClosed refuses logins (never connections) while the store is
	// unreachable; false: each node goes on alone (fail open).
	FailClosed bool `yaml:"fail_closed"`
	// Timeout bounds each call to the store.
	Timeout time.Duration `yaml:"timeout"`
	// Lease is how long a reservation outlives a node that crashed; the
	// node renews it every third of that while the attempt is alive.
	Lease time.Duration `yaml:"lease"`
	// FeedLength is how many changes the feed keeps for nodes that
	// resume it; a node further behind reloads the whole ban list.
	FeedLength int `yaml:"feed_length"`
}

// Enabled reports whether a shared store is configured.
func (s *SharedConfig) Enabled() bool { return len(s.Addresses) > 0 }

// TarpitConfig is `guard.tarpit`: a delay before every login attempt
// from a source with recent failures, doubling per failure.
type TarpitConfig struct {
	// After this many distinct failures in Window the delay starts. 0: off.
	After int `yaml:"after"`
	// Step is the first delay; each further failure doubles it.
	Step time.Duration `yaml:"step"`
	// Max caps the delay.
	Max time.Duration `yaml:"max"`
}

// BanConfig is `guard.ban`: refusing an address or network outright.
type BanConfig struct {
	// IPAfter distinct failures from one address in Window ban it. 0: off.
	IPAfter int `yaml:"ip_after"`
	// NetworkAfter distinct failures from one network (each of
	// ipv4_prefix and ipv6_prefixes) in Window ban it. 0: off.
	NetworkAfter int `yaml:"network_after"`
	// Duration of a first ban.
	Duration time.Duration `yaml:"duration"`
	// Factor multiplies the duration for each earlier ban of the same
	// address or network still remembered.
	Factor float64 `yaml:"factor"`
	// Max caps an escalated ban.
	Max time.Duration `yaml:"max"`
	// ForgetAfter: a ban older than this no longer escalates the next one.
	ForgetAfter time.Duration `yaml:"forget_after"`
}

// LockoutConfig is `guard.lockout`: protecting one account from many
// sources (distributed guessing) without locking its owner out.
type LockoutConfig struct {
	// After distinct wrong passwords for one login in Window (here:
	// lockout.window) from untrusted sources, the login is locked for
	// those sources. 0: off.
	After int `yaml:"after"`
	// Window over which failures for one login count; longer than the
	// address window because distributed guessing is slow.
	Window time.Duration `yaml:"window"`
	// Duration of a lockout.
	Duration time.Duration `yaml:"duration"`
	// PerIPAfter distinct wrong passwords for one login from one address
	// in guard.window block that login from that address (also when the
	// address is exempt from bans), until the failures age out. 0: off.
	PerIPAfter int `yaml:"per_ip_after"`
	// RememberSuccess: a network (ipv4_prefix, longest ipv6 prefix) where
	// a login succeeded is not locked out of that login for this long.
	RememberSuccess time.Duration `yaml:"remember_success"`
}

// ExemptionConfig is `guard.exemption`: an address with a successful
// login is not banned automatically (an office NAT with one phone that
// has a stale password).
type ExemptionConfig struct {
	// Duration of the exemption after each success. 0: off.
	Duration time.Duration `yaml:"duration"`
	// MaxFailures: an exempt address with this many distinct failures in
	// Window is banned anyway; one valid account must not buy a licence
	// to spray the others. 0: no ceiling.
	MaxFailures int `yaml:"max_failures"`
}

// ConnectionsConfig is `guard.connections`; 0 means no limit.
type ConnectionsConfig struct {
	// MaxTotal open client connections.
	MaxTotal int `yaml:"max_total"`
	// MaxPerIP open connections from one address (not trusted ones).
	MaxPerIP int `yaml:"max_per_ip"`
	// MaxPerNetwork open connections from one network (ipv4_prefix, the
	// longest ipv6 prefix; not trusted ones).
	MaxPerNetwork int `yaml:"max_per_network"`
	// MaxPreAuth connections that have not logged in yet.
	MaxPreAuth int `yaml:"max_preauth"`
	// MaxPreAuthPerIP connections from one address not logged in yet.
	MaxPreAuthPerIP int `yaml:"max_preauth_per_ip"`
	// MaxPreAuthPerNetwork connections from one network (ipv4_prefix,
	// the longest ipv6 prefix) not logged in yet; untrusted, unproven
	// sources only.
	MaxPreAuthPerNetwork int `yaml:"max_preauth_per_network"`
	// ProvenMaxPerIP and ProvenMaxPreAuthPerIP replace MaxPerIP and
	// MaxPreAuthPerIP for a proven source: an address with a recent
	// successful login (exemption.duration). A proven source never gets
	// less room than the plain limit.
	ProvenMaxPerIP        int `yaml:"proven_max_per_ip"`
	ProvenMaxPreAuthPerIP int `yaml:"proven_max_preauth_per_ip"`
}

// BackendConfig is `guard.backend`: a cap on concurrent backend logins.
type BackendConfig struct {
	// MaxConcurrent backend logins at once. 0: no cap.
	MaxConcurrent int `yaml:"max_concurrent"`
	// Reserved of them are kept for trusted networks and proven sources
	// (a recent successful login): the rest may use at most
	// MaxConcurrent - Reserved. At most half of MaxConcurrent is kept
	// (see reserve), so a config that only lowers max_concurrent keeps
	// working with the default reserve.
	Reserved int `yaml:"reserved"`
	// MaxPerSource backend logins at once from one untrusted, unproven
	// address. 0: no cap.
	MaxPerSource int `yaml:"max_per_source"`
	// Queue is how many logins may wait for a slot; more are refused
	// at once with the protocol's temporary error.
	Queue int `yaml:"queue"`
	// QueueWait bounds the wait for a slot.
	QueueWait time.Duration `yaml:"queue_wait"`
}

// CompromiseConfig is `guard.compromise`: a login succeeding from many
// countries in a short time is likely a stolen password.
type CompromiseConfig struct {
	// Countries: a success from more distinct countries than this within
	// Window raises COMPROMISED. 0: off.
	Countries int `yaml:"countries"`
	// Window over which countries count.
	Window time.Duration `yaml:"window"`
	// Deny: a compromised login is refused (from everywhere but trusted
	// networks) until an admin runs `mailgate unlock`.
	Deny bool `yaml:"deny"`
}

// Bounds checked by Validate.
const (
	// maxThreshold bounds every "after" count: a window keeps at most
	// this many distinct failures per key, so memory per key is bounded.
	maxThreshold = 1000
	// minTracked keeps MaxTracked from being set so low that eviction
	// makes counting meaningless.
	minTracked = 100
)

// Defaults returns the recommended configuration; docs/bruteforce.md
// gives the reason for each value.
func Defaults() Config {
	return Config{
		Window:       15 * time.Minute,
		IPv4Prefix:   24,
		IPv6Prefixes: []int{64, 48},
		Tarpit:       TarpitConfig{After: 3, Step: time.Second, Max: 15 * time.Second},
		Ban: BanConfig{
			IPAfter: 10, NetworkAfter: 30,
			Duration: 15 * time.Minute, Factor: 4, Max: 7 * 24 * time.Hour,
			ForgetAfter: 7 * 24 * time.Hour,
		},
		Lockout: LockoutConfig{
			After: 10, Window: time.Hour, Duration: time.Hour,
			PerIPAfter: 5, RememberSuccess: 30 * 24 * time.Hour,
		},
		Exemption: ExemptionConfig{Duration: 24 * time.Hour, MaxFailures: 50},
		Connections: ConnectionsConfig{
			MaxTotal: 10000, MaxPerIP: 50, MaxPerNetwork: 200,
			MaxPreAuth: 1000, MaxPreAuthPerIP: 10, MaxPreAuthPerNetwork: 100,
			ProvenMaxPerIP: 200, ProvenMaxPreAuthPerIP: 50,
		},
		Backend: BackendConfig{
			MaxConcurrent: 32, Reserved: 8, MaxPerSource: 4,
			Queue: 64, QueueWait: 2 * time.Second,
		},
		Compromise:     CompromiseConfig{Countries: 3, Window: 24 * time.Hour},
		FailurePenalty: PenaltyConfig{Init: 2 * time.Second, Max: 15 * time.Second},
		MaxTracked:     100_000,
		Shared: SharedConfig{
			KeyPrefix: "mailgate:", Timeout: 250 * time.Millisecond,
			Lease: 15 * time.Second, FeedLength: 10000,
		},
	}
}

// Validate reports every problem in c at once, each with its key path.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("guard."+key+": "+format, a...))
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, "must be positive, got %v", d)
		}
	}
	nonNeg := func(key string, d time.Duration) {
		if d < 0 {
			bad(key, "must not be negative, got %v", d)
		}
	}
	count := func(key string, n, max int) {
		if n < 0 || n > max {
			bad(key, "must be between 0 and %d, got %d", max, n)
		}
	}
	positive("window", c.Window)
	if c.IPv4Prefix < 8 || c.IPv4Prefix > 32 {
		bad("ipv4_prefix", "must be between 8 and 32, got %d", c.IPv4Prefix)
	}
	if len(c.IPv6Prefixes) == 0 {
		bad("ipv6_prefixes", "needs at least one prefix length")
	}
	for i, p := range c.IPv6Prefixes {
		if p < 16 || p > 128 {
			bad(fmt.Sprintf("ipv6_prefixes[%d]", i), "must be between 16 and 128, got %d", p)
		} else if slices.Index(c.IPv6Prefixes, p) != i {
			bad(fmt.Sprintf("ipv6_prefixes[%d]", i), "%d is listed twice", p)
		}
	}
	_, err := ParsePrefixes(c.TrustedNetworks, "guard.trusted_networks")
	errs = append(errs, err)
	_, err = ParsePrefixes(c.DenyNetworks, "guard.deny_networks")
	errs = append(errs, err)
	for i, cc := range c.DenyCountries {
		if !isCountryCode(cc) {
			bad(fmt.Sprintf("deny_countries[%d]", i), "%q is not a two-letter upper-case country code", cc)
		}
	}

	count("tarpit.after", c.Tarpit.After, maxThreshold)
	if c.Tarpit.After > 0 {
		positive("tarpit.step", c.Tarpit.Step)
		if c.Tarpit.Max < c.Tarpit.Step {
			bad("tarpit.max", "must be at least tarpit.step (%v), got %v", c.Tarpit.Step, c.Tarpit.Max)
		}
	}

	count("ban.ip_after", c.Ban.IPAfter, maxThreshold)
	count("ban.network_after", c.Ban.NetworkAfter, maxThreshold)
	if c.Ban.IPAfter > 0 || c.Ban.NetworkAfter > 0 {
		positive("ban.duration", c.Ban.Duration)
		if c.Ban.Factor < 1 || c.Ban.Factor > 100 {
			bad("ban.factor", "must be between 1 and 100, got %v", c.Ban.Factor)
		}
		if c.Ban.Max < c.Ban.Duration {
			bad("ban.max", "must be at least ban.duration (%v), got %v", c.Ban.Duration, c.Ban.Max)
		}
		nonNeg("ban.forget_after", c.Ban.ForgetAfter)
	}

	count("lockout.after", c.Lockout.After, maxThreshold)
	count("lockout.per_ip_after", c.Lockout.PerIPAfter, maxThreshold)
	if c.Lockout.After > 0 {
		positive("lockout.window", c.Lockout.Window)
		positive("lockout.duration", c.Lockout.Duration)
	}
	nonNeg("lockout.remember_success", c.Lockout.RememberSuccess)

	nonNeg("exemption.duration", c.Exemption.Duration)
	count("exemption.max_failures", c.Exemption.MaxFailures, maxThreshold)

	const maxConns = 10_000_000
	count("connections.max_total", c.Connections.MaxTotal, maxConns)
	count("connections.max_per_ip", c.Connections.MaxPerIP, maxConns)
	count("connections.max_per_network", c.Connections.MaxPerNetwork, maxConns)
	count("connections.max_preauth", c.Connections.MaxPreAuth, maxConns)
	count("connections.max_preauth_per_ip", c.Connections.MaxPreAuthPerIP, maxConns)
	count("connections.max_preauth_per_network", c.Connections.MaxPreAuthPerNetwork, maxConns)
	count("connections.proven_max_per_ip", c.Connections.ProvenMaxPerIP, maxConns)
	count("connections.proven_max_preauth_per_ip", c.Connections.ProvenMaxPreAuthPerIP, maxConns)

	count("backend.max_concurrent", c.Backend.MaxConcurrent, maxConns)
	count("backend.queue", c.Backend.Queue, maxConns)
	count("backend.max_per_source", c.Backend.MaxPerSource, maxConns)
	if c.Backend.Reserved < 0 {
		bad("backend.reserved", "must be at least 0, got %d", c.Backend.Reserved)
	}
	nonNeg("backend.queue_wait", c.Backend.QueueWait)

	count("compromise.countries", c.Compromise.Countries, 250)
	if c.Compromise.Countries > 0 {
		positive("compromise.window", c.Compromise.Window)
	}
	if c.Compromise.Deny && c.Compromise.Countries == 0 {
		bad("compromise.deny", "needs compromise.countries above 0")
	}
	nonNeg("failure_penalty.init", c.FailurePenalty.Init)
	if c.FailurePenalty.Init > 0 && (c.FailurePenalty.Max < c.FailurePenalty.Init || c.FailurePenalty.Max > time.Hour) {
		bad("failure_penalty.max", "must be between failure_penalty.init (%v) and 1h, got %v", c.FailurePenalty.Init, c.FailurePenalty.Max)
	}
	if c.MaxTracked < minTracked || c.MaxTracked > maxConns {
		bad("max_tracked", "must be between %d and %d, got %d", minTracked, maxConns, c.MaxTracked)
	}
	if sh := &c.Shared; sh.Enabled() {
		for i, a := range sh.Addresses {
			if _, _, err := net.SplitHostPort(a); err != nil {
				bad(fmt.Sprintf("shared.addresses[%d]", i), "%q is not host:port", a)
			}
		}
		if sh.HashKeyFile == "" {
			bad("shared.hash_key_file", "is needed with a shared store: every node must count one wrong password once")
		}
		if sh.KeyPrefix == "" {
			bad("shared.key_prefix", "must not be empty")
		}
		if sh.DB < 0 || sh.DB > 1000 {
			bad("shared.db", "must be between 0 and 1000, got %d", sh.DB)
		}
		if sh.Timeout <= 0 || sh.Timeout > 10*time.Second {
			bad("shared.timeout", "must be between 0 and 10s, got %v", sh.Timeout)
		}
		if sh.Lease < time.Second {
			bad("shared.lease", "must be at least 1s, got %v", sh.Lease)
		}
		count("shared.feed_length", sh.FeedLength, maxConns)
		if sh.FeedLength < 100 {
			bad("shared.feed_length", "must be at least 100, got %d", sh.FeedLength)
		}
		if sh.CAFile != "" && !sh.TLS {
			bad("shared.ca_file", "needs shared.tls")
		}
		if sh.Username != "" && sh.PasswordFile == "" {
			bad("shared.password_file", "is needed with shared.username")
		}
	}
	return errors.Join(errs...)
}

// ParsePrefixes reads a network list with the one rule every list
// follows (geo.ParseNetworks): canonical CIDRs or bare addresses,
// IPv4-mapped forms as IPv4; each bad entry is reported as path[i].
func ParsePrefixes(in []string, path string) ([]netip.Prefix, error) {
	return geo.ParseNetworks(in, path)
}

func isCountryCode(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

// reserve is how many backend slots only trusted and proven sources may
// take: Reserved, but never more than half of MaxConcurrent, so that
// unproven sources always keep slots of their own.
func (b BackendConfig) reserve() int {
	return min(b.Reserved, b.MaxConcurrent/2)
}
