package guard

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultsValid(t *testing.T) {
	c := Defaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("Defaults().Validate() = %v", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Defaults()
	c.Window = 0
	c.IPv4Prefix = 33
	c.IPv6Prefixes = []int{64, 64, 200}
	c.TrustedNetworks = []string{"10.0.0.0/8", "not-a-net"}
	c.DenyNetworks = []string{"10.0.0.0/99"}
	c.DenyCountries = []string{"ru"}
	c.Tarpit.Max = time.Millisecond
	c.Ban.Factor = 0.5
	c.Ban.Max = time.Minute
	c.Lockout.After = -1
	c.Exemption.Duration = -time.Second
	c.Connections.MaxPerIP = -5
	c.Backend.QueueWait = -time.Second
	c.Compromise = CompromiseConfig{Deny: true}
	c.MaxTracked = 5
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted a broken config")
	}
	for _, key := range []string{
		"guard.window:", "guard.ipv4_prefix:", "guard.ipv6_prefixes[1]:", "guard.ipv6_prefixes[2]:",
		"guard.trusted_networks[1]:", "guard.deny_networks[0]:", "guard.deny_countries[0]:",
		"guard.tarpit.max:", "guard.ban.factor:", "guard.ban.max:", "guard.lockout.after:",
		"guard.exemption.duration:", "guard.connections.max_per_ip:", "guard.backend.queue_wait:",
		"guard.compromise.deny:", "guard.max_tracked:",
	} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("Validate error lacks %q:\n%v", key, err)
		}
	}
	if n := len(strings.Split(err.Error(), "\n")); n != 16 {
		t.Errorf("Validate reported %d problems, want 16:\n%v", n, err)
	}
}

func TestZeroDisablesActions(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) {
		c.Tarpit.After, c.Ban.IPAfter, c.Ban.NetworkAfter = 0, 0, 0
		c.Lockout.After, c.Lockout.PerIPAfter, c.Compromise.Countries = 0, 0, 0
	})
	if err := g.rules.Load().cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ev := failMany(g, addr1, 200, "z")
	for i := range 50 {
		ev = append(ev, g.failure("alice@example.org", addr1, string(rune('a'+i)))...)
	}
	if len(ev) != 0 {
		t.Fatalf("with every action off, failures raised %v", kinds(ev))
	}
	if v := g.checkNow("alice@example.org", addr1); !v.Allow || v.Delay != 0 {
		t.Fatalf("Check with every action off = %+v", v)
	}
}

func TestParsePrefixes(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.0/24", "192.0.2.0/24"},
		{"192.0.2.7", "192.0.2.7/32"},
		{"::ffff:192.0.2.7", "192.0.2.7/32"},
		{"::ffff:192.0.2.0/120", "192.0.2.0/24"},
		{"2001:db8::/48", "2001:db8::/48"},
	} {
		got, err := ParsePrefixes([]string{tc.in}, "x")
		if err != nil || len(got) != 1 || got[0].String() != tc.want {
			t.Errorf("ParsePrefixes(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	// Host bits set is an error, as in every network list (no silent
	// masking that would widen a trust list).
	if _, err := ParsePrefixes([]string{"192.0.2.7/24"}, "guard.trusted_networks"); err == nil ||
		err.Error() != `guard.trusted_networks[0]: "192.0.2.7/24" has host bits set; did you mean 192.0.2.0/24?` {
		t.Errorf("ParsePrefixes(192.0.2.7/24) error = %v", err)
	}
	for _, bad := range []string{"", "x", "10.0.0.0/33", "fe80::1%eth0", "fe80::1%eth0/64", "2001:db8::1/48", "::ffff:192.0.2.7/120"} {
		if _, err := ParsePrefixes([]string{bad}, "x"); err == nil {
			t.Errorf("ParsePrefixes(%q) accepted", bad)
		}
	}
}

func TestReload(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	failMany(g, addr1, 10, "r")
	if _, err := g.Accept(addr1); err == nil {
		t.Fatal("banned address admitted")
	}
	bad := Defaults()
	bad.Window = 0
	if err := g.Reload(bad); err == nil || !strings.Contains(err.Error(), "guard.window") {
		t.Fatalf("Reload(invalid) = %v, want a guard.window error", err)
	}
	c := Defaults()
	c.TrustedNetworks = []string{"192.0.2.0/24"}
	c.Ban.IPAfter = 3
	c.Backend.MaxConcurrent, c.Backend.Reserved = 1, 0 // need a restart: ignored
	if err := g.Reload(c); err != nil {
		t.Fatal(err)
	}
	conn, err := g.Accept(addr1)
	if err != nil {
		t.Fatalf("Accept after reload made the ban's network trusted = %v", err)
	}
	conn.Close()
	ev := failMany(g, addrFar, 3, "n")
	if _, ok := findEvent(ev, EventBanned, "198.51.100.7/32"); !ok {
		t.Fatalf("3 failures after reload to ban.ip_after 3 raised %v", kinds(ev))
	}
	if len(g.Bans()) != 2 {
		t.Fatalf("bans after reload = %v, want the old and the new one", g.Bans())
	}
	if g.static.Backend.MaxConcurrent != 32 {
		t.Fatalf("backend cap changed by reload to %d", g.static.Backend.MaxConcurrent)
	}
}
