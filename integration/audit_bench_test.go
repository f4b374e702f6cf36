//go:build integration

package integration

// The end-to-end target for the login history: IMAPS logins/s
// with the audit on at least 0.97x of off, at concurrency 64, the same
// Dovecot behind both. Figures in docs/BENCHMARKS.md, "Audit database".

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
)

// benchLoginsRate matches the logins line of `mailgate-bench logins`.
var benchLoginsRate = regexp.MustCompile(`logins in \S+ = ([0-9.]+)/s`)

// BenchmarkAuditLogins runs `mailgate-bench logins -c 64` against two
// mailgates, audit off and on, alternating which goes first each round,
// and reports the median ratio on/off. Run without -race:
//
//	go test -tags integration ./integration -run '^$' -bench BenchmarkAuditLogins -benchtime 1x
func BenchmarkAuditLogins(b *testing.B) {
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
	config := func(audit string) func(port int) string {
		return func(port int) string {
			return fmt.Sprintf(`hostname: mail.example.test
log: {level: info, format: text}
admin: {address: "off"}
listeners:
  - {name: imaps, protocol: imap, address: "127.0.0.1:%d", tls: implicit}
backends:
  imap: {address: "127.0.0.1:%d", tls: none, forward_client: true}
tls: {self_signed: true}
geo: {overrides: {"127.0.0.1/32": GB}}
policy: {allow_countries: [GB]}
guard:
  trusted_networks: [127.0.0.0/8]
  backend: {max_concurrent: 0}
%s`, port, hs.imapPort, audit)
		}
	}
	db := filepath.Join(b.TempDir(), "audit.db")
	off := startMailgate(b, config(""))
	on := startMailgate(b, config(auditSection(db)))
	run := func(m *Mailgate) float64 {
		out, err := exec.Command(bench, "logins", "-addr", m.Addr["imaps"], "-proto", "imap", "-c", "64", "-d", "8s",
			"-user", "alice@example.test", "-pass", users["alice@example.test"], "-pid", strconv.Itoa(m.cmd.Process.Pid)).CombinedOutput()
		mm := benchLoginsRate.FindSubmatch(out)
		if err != nil || mm == nil {
			b.Fatalf("mailgate-bench logins: %v\n%s", err, out)
		}
		b.Logf("%s", out)
		v, _ := strconv.ParseFloat(string(mm[1]), 64)
		return v
	}
	for b.Loop() {
		var ratios, offs, ons []float64
		for round := range 3 {
			var rOff, rOn float64
			if round%2 == 0 {
				rOff, rOn = run(off), run(on)
			} else {
				rOn, rOff = run(on), run(off)
			}
			offs, ons, ratios = append(offs, rOff), append(ons, rOn), append(ratios, rOn/rOff)
		}
		slices.Sort(ratios)
		slices.Sort(offs)
		slices.Sort(ons)
		b.ReportMetric(offs[1], "off-logins/s")
		b.ReportMetric(ons[1], "on-logins/s")
		b.ReportMetric(ratios[1], "on/off")
	}
	on.stop()
	b.Log(attackAuditFigures(b, db))
}
