//go:build integration

package integration

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/guard"
)

// commandStats are the store's calls per command (INFO commandstats).
func commandStats(t testing.TB, addr string) map[string]int {
	t.Helper()
	info, err := storeClient(t, addr).Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		out[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.Atoi(calls)
	}
	return out
}

// netBytes is the store's total_net_input_bytes and _output_bytes.
func netBytes(t testing.TB, addr string) (in, out int) {
	t.Helper()
	info, err := storeClient(t, addr).Info(context.Background(), "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		switch k {
		case "total_net_input_bytes":
			in, _ = strconv.Atoi(v)
		case "total_net_output_bytes":
			out, _ = strconv.Atoi(v)
		}
	}
	return in, out
}

// The commands one login costs the store with the default guard
// settings (script internals included): a successful login of a known
// user from a fresh IPv4 and IPv6 address, and a wrong password.
func TestFleetCommandsPerLogin(t *testing.T) {
	rs := redisOnly(t, "")
	c := storeGuardConfig(t, rs.Addr())
	d := guard.Defaults()
	c.Ban, c.Lockout = d.Ban, d.Lockout
	n := startStoreNode(t, c)
	sc := storeClient(t, rs.Addr())
	for _, tc := range []struct {
		name, addr string
		o          guard.Outcome
	}{
		{"success IPv4", "198.51.%d.70", guard.Passed},
		{"success IPv6", "2001:db8:%d::1", guard.Passed},
		{"wrong password IPv4", "203.0.%d.71", guard.WrongPassword},
	} {
		const logins = 20
		if err := sc.ConfigResetStat(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		in0, out0 := netBytes(t, rs.Addr())
		for i := range logins {
			a := n.g.Attempt("user"+strconv.Itoa(i), netip.MustParseAddr(fmt.Sprintf(tc.addr, 100+i)), "pw")
			if v := a.Begin(context.Background()); !v.Allow {
				t.Fatalf("%s %d: %+v", tc.name, i, v)
			}
			a.Finish(tc.o, "GB")
		}
		in1, out1 := netBytes(t, rs.Addr())
		st := commandStats(t, rs.Addr())
		all := 0
		var names []string
		for k, v := range st {
			if k == "config|resetstat" || k == "info" {
				continue
			}
			all += v
			names = append(names, k+"="+strconv.FormatFloat(float64(v)/logins, 'g', 3, 64))
		}
		slices.Sort(names)
		// The bytes include one INFO request and reply (this test's).
		t.Logf("%s: %.1f commands, %d bytes in, %d bytes out per login (%s)", tc.name, float64(all)/logins,
			(in1-in0)/logins, (out1-out0)/logins, strings.Join(names, " "))
	}
}
