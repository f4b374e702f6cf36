//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchLoginsLine is mailgate-bench logins' summary: count, rate, p50.
var benchLoginsLine = regexp.MustCompile(`: (\d+) logins in \S+ = ([0-9.]+)/s; p50 ([0-9.]+ ?[mµn]?s)`)

// BenchmarkFleetLogins (issue #16): IMAPS logins/s and p50 through a
// node whose guard uses the shared store (a real redis-server on
// loopback) against one with the in-memory guard, at concurrency 8 and
// 64, three rounds alternating the order, in the same run. The client
// (127.0.0.1) is placed in GB and is not trusted, so every login goes
// through the guard's store round trips (begin, finish); all logins are
// alice's with her password. It also reports the store's commands and
// bytes per login (INFO stats before and after the shared node's runs).
//
//	go test -tags integration ./integration -run '^$' -bench BenchmarkFleetLogins -benchtime 1x
func BenchmarkFleetLogins(b *testing.B) { fleetLogins(b, "", []int{8, 64}) }

// BenchmarkFleetLoginLatency is BenchmarkFleetLogins with the guard's
// thresholds at their maximum (1000), at concurrency 1 and 8: one
// address running 8 logins at once is then never over a threshold
// because of attempts in flight, so no attempt waits for another, and
// the added p50 is what the store's two round trips cost a login.
//
//	go test -tags integration ./integration -run '^$' -bench BenchmarkFleetLoginLatency -benchtime 1x
func BenchmarkFleetLoginLatency(b *testing.B) {
	fleetLogins(b, "  tarpit: {after: 1000}\n  ban: {ip_after: 1000, network_after: 1000}\n  lockout: {after: 1000, per_ip_after: 1000}\n", []int{1, 8})
}

// fleetLogins runs the shared-against-in-memory comparison at each
// concurrency in concs, with extra added to both nodes' guard section.
func fleetLogins(b *testing.B, extra string, concs []int) {
	if raceEnabled {
		b.Skip("the race detector would measure itself")
	}
	hs := need(b)
	bench := filepath.Join(b.TempDir(), "mailgate-bench")
	cmd := exec.Command("go", "build", "-o", bench, "./cmd/mailgate-bench")
	cmd.Dir = hs.repo
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building mailgate-bench: %v\n%s", err, out)
	}
	rs := needRedis(b, "")
	dir := b.TempDir()
	key, pw := filepath.Join(dir, "hash-key"), filepath.Join(dir, "store-password")
	os.WriteFile(key, []byte("fleet-hash-key-for-the-integration-tests\n"), 0o600)
	os.WriteFile(pw, []byte("fleet-store-password-0123\n"), 0o600)
	config := func(shared string) func(port int) string {
		return func(port int) string {
			return fmt.Sprintf(`hostname: mail.example.test
log: {level: warn, format: text}
admin: {address: "off"}
listeners:
  - {name: imaps, protocol: imap, address: "127.0.0.1:%d", tls: implicit}
backends:
  imap: {address: "127.0.0.1:%d", tls: none, forward_client: true}
tls: {self_signed: true}
geo: {overrides: {"127.0.0.1/32": GB}}
policy: {allow_countries: [GB]}
guard:
  connections: {max_total: 0, max_per_ip: 0, max_per_network: 0, max_preauth: 0, max_preauth_per_ip: 0, max_preauth_per_network: 0, proven_max_per_ip: 0, proven_max_preauth_per_ip: 0}
  backend: {max_concurrent: 0, max_per_source: 0}
%s%s`, port, hs.imapPort, extra, shared)
		}
	}
	mem := startMailgate(b, config(""))
	shared := startMailgate(b, config(fmt.Sprintf("  shared: {addresses: [%q], username: mailgate, password_file: %q, hash_key_file: %q}\n", rs.Addr(), pw, key)))
	time.Sleep(time.Second) // the shared node's first synchronization (logged at info, this log is warn)
	sc := storeClient(b, rs.Addr())
	stats := func() (cmds, in, out int64) {
		info, err := sc.Info(context.Background(), "stats").Result()
		if err != nil {
			b.Fatal(err)
		}
		for _, l := range strings.Split(info, "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(l), ":")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "total_commands_processed":
				cmds = n
			case "total_net_input_bytes":
				in = n
			case "total_net_output_bytes":
				out = n
			}
		}
		return
	}
	type res struct {
		rate float64
		p50  time.Duration
		n    int64
	}
	run := func(m *Mailgate, c int) res {
		out, err := exec.Command(bench, "logins", "-addr", m.Addr["imaps"], "-proto", "imap", "-c", strconv.Itoa(c), "-d", "8s",
			"-user", "alice@example.test", "-pass", users["alice@example.test"], "-pid", strconv.Itoa(m.cmd.Process.Pid)).CombinedOutput()
		mm := benchLoginsLine.FindSubmatch(out)
		if err != nil || mm == nil {
			b.Fatalf("mailgate-bench logins: %v\n%s", err, out)
		}
		fmt.Printf("%s\n", strings.TrimSpace(string(out)))
		n, _ := strconv.ParseInt(string(mm[1]), 10, 64)
		r, _ := strconv.ParseFloat(string(mm[2]), 64)
		p, _ := time.ParseDuration(strings.ReplaceAll(string(mm[3]), " ", ""))
		return res{r, p, n}
	}
	if err := sc.ConfigResetStat(context.Background()).Err(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		var logins, cmds, bin, bout int64
		for _, c := range concs {
			var ratios []float64
			var mems, shs []res
			for round := range 3 {
				var rm, rsh res
				sharedRun := func() res {
					c0, i0, o0 := stats()
					r := run(shared, c)
					c1, i1, o1 := stats()
					logins += r.n
					cmds, bin, bout = cmds+c1-c0-1, bin+i1-i0, bout+o1-o0 // -1: the INFO itself
					return r
				}
				if round%2 == 0 {
					rm, rsh = run(mem, c), sharedRun()
				} else {
					rsh, rm = sharedRun(), run(mem, c)
				}
				mems, shs, ratios = append(mems, rm), append(shs, rsh), append(ratios, rsh.rate/rm.rate)
			}
			slices.Sort(ratios)
			byRate := func(a, b res) int { return int(a.rate - b.rate) }
			slices.SortFunc(mems, byRate)
			slices.SortFunc(shs, byRate)
			p50 := func(rs []res) time.Duration {
				ps := []time.Duration{rs[0].p50, rs[1].p50, rs[2].p50}
				slices.Sort(ps)
				return ps[1]
			}
			fmt.Printf("c=%d: in-memory %.1f/s p50 %v; shared %.1f/s p50 %v; shared/in-memory %.2f (medians of 3 rounds: %.2f)\n",
				c, mems[1].rate, p50(mems), shs[1].rate, p50(shs), ratios[1], ratios)
			b.ReportMetric(ratios[1], fmt.Sprintf("shared/mem-c%d", c))
			b.ReportMetric(float64(p50(shs)-p50(mems))/1e6, fmt.Sprintf("added-p50-ms-c%d", c))
		}
		if n := strings.Count(shared.Log(), "fleet: shared store lost"); n > 0 {
			b.Errorf("the shared node lost the store %d times during the runs; its figures mix in local decisions", n)
		}
		if cs, err := sc.Info(context.Background(), "commandstats").Result(); err == nil {
			fmt.Printf("store commandstats over the run:\n%s\n", cs)
		}
		if logins > 0 {
			fmt.Printf("store per login: %.2f commands, %.0f bytes in, %.0f bytes out (%d logins)\n",
				float64(cmds)/float64(logins), float64(bin)/float64(logins), float64(bout)/float64(logins), logins)
			b.ReportMetric(float64(cmds)/float64(logins), "store-cmds/login")
			b.ReportMetric(float64(bin+bout)/float64(logins), "store-bytes/login")
		}
	}
}
