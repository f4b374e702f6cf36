//go:build integration

package integration

// verify: dovecot-auth against verify: imap in the same run: SMTPS
// logins/s and Dovecot's CPU per login. Figures in docs/BENCHMARKS.md,
// "SMTP verify: dovecot-auth against imap".

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"
)

// benchServerCPU matches the CPU figure of `mailgate-bench logins`.
var benchServerCPU = regexp.MustCompile(`server CPU per login (\S+) (\S+)`)

// BenchmarkSMTPVerifyModes runs `mailgate-bench logins -proto smtp -c 8`
// against two mailgates in front of the same Dovecot and Postfix, one
// with verify: imap and one with verify: dovecot-auth (the unix socket),
// both without the verification cache, alternating which goes first each
// round, with the SMTP greeting delay off, -pid naming Dovecot's master so the CPU figure is all of
// Dovecot's per login. Run without -race:
//
//	go test -tags integration ./integration -run '^$' -bench BenchmarkSMTPVerifyModes -benchtime 1x
func BenchmarkSMTPVerifyModes(b *testing.B) {
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
	config := func(verify string) func(port int) string {
		return func(port int) string {
			return fmt.Sprintf(`hostname: mail.example.test
log: {level: info, format: text}
admin: {address: "off"}
listeners:
  - {name: smtps, protocol: smtp, address: "127.0.0.1:%d", tls: implicit}
backends:
  imap: {address: "127.0.0.1:%d", tls: none, forward_client: true}
  smtp: {address: "127.0.0.1:%d", tls: none, xclient: true, verify_cache_ttl: 0s, %s}
tls: {self_signed: true}
limits: {greeting_delay: -1s}
geo: {overrides: {"127.0.0.1/32": GB}}
policy: {allow_countries: [GB]}
guard:
  trusted_networks: [127.0.0.0/8]
  backend: {max_concurrent: 0}
`, port, hs.imapPort, hs.smtpPort, verify)
		}
	}
	modes := []struct {
		name string
		m    *Mailgate
	}{
		{"imap", startMailgate(b, config("verify: imap"))},
		{"dovecot-auth", startMailgate(b, config("verify: dovecot-auth, dovecot_auth: "+strconv.Quote(hs.stack.AuthSocket)))},
	}
	run := func(m *Mailgate) (rate float64, cpu time.Duration) {
		out, err := exec.Command(bench, "logins", "-addr", m.Addr["smtps"], "-proto", "smtp", "-c", "8", "-d", "8s",
			"-user", "alice@example.test", "-pass", users["alice@example.test"], "-pid", strconv.Itoa(hs.stack.DovecotPID())).CombinedOutput()
		mm, mc := benchLoginsRate.FindSubmatch(out), benchServerCPU.FindSubmatch(out)
		if err != nil || mm == nil || mc == nil {
			b.Fatalf("mailgate-bench logins: %v\n%s", err, out)
		}
		b.Logf("%s", out)
		rate, _ = strconv.ParseFloat(string(mm[1]), 64)
		cpu, _ = time.ParseDuration(string(mc[1]) + string(mc[2]))
		return rate, cpu
	}
	for b.Loop() {
		rates := make([][]float64, len(modes))
		cpus := make([][]time.Duration, len(modes))
		for round := range 3 {
			for j := range modes {
				i := j
				if round%2 == 1 {
					i = len(modes) - 1 - j
				}
				r, c := run(modes[i].m)
				rates[i], cpus[i] = append(rates[i], r), append(cpus[i], c)
			}
		}
		for i, md := range modes {
			slices.Sort(rates[i])
			slices.Sort(cpus[i])
			b.ReportMetric(rates[i][1], md.name+"-logins/s")
			b.ReportMetric(float64(cpus[i][1].Microseconds())/1000, md.name+"-dovecot-ms/login")
		}
	}
}
