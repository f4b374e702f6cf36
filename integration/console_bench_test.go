//go:build integration

package integration

// The target for the web console: a console open in a browser
// costs the login rate nothing measurable (at least 0.97x). Figures in
// docs/BENCHMARKS.md, "Web console".

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkConsoleLogins runs `mailgate-bench logins -c 64` against two
// mailgates with the login history on, one without the console and one
// with it and a signed-in client reading the overview, the country page
// and the live sessions every second (what an open browser tab that is
// reloaded costs), alternating which goes first each round; it reports
// the median ratio with/without. Run without -race:
//
//	go test -tags integration ./integration -run '^$' -bench BenchmarkConsoleLogins -benchtime 1x
func BenchmarkConsoleLogins(b *testing.B) {
	if raceEnabled {
		b.Skip("the race detector would measure itself")
	}
	hs := need(b)
	dir := b.TempDir()
	bench := filepath.Join(dir, "mailgate-bench")
	cmd := exec.Command("go", "build", "-o", bench, "./cmd/mailgate-bench")
	cmd.Dir = hs.repo
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building mailgate-bench: %v\n%s", err, out)
	}
	users := filepath.Join(dir, "console.users")
	pw := "console-bench-pw"
	passwd := exec.Command(hs.mailgateBin, "admin", "passwd", "-file", users, "-cost", "4", "bench")
	passwd.Stdin = strings.NewReader(pw + "\n")
	if out, err := passwd.CombinedOutput(); err != nil {
		b.Fatalf("mailgate admin passwd: %v\n%s", err, out)
	}
	ports, err := freePorts(1)
	if err != nil {
		b.Fatal(err)
	}
	adminAddr := addr(ports[0])
	config := func(adminSection string, db string) func(port int) string {
		return func(port int) string {
			return fmt.Sprintf(`hostname: mail.example.test
log: {level: info, format: text}
%s
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
%s`, adminSection, port, hs.imapPort, auditSection(db))
		}
	}
	off := startMailgate(b, config(`admin: {address: "off"}`, filepath.Join(dir, "off.db")))
	on := startMailgate(b, config(fmt.Sprintf(`admin: {address: %q, console: {users_file: %q}}`, adminAddr, users), filepath.Join(dir, "on.db")))
	if !waitFor(func() bool { return accepting(adminAddr) }, eventually) {
		b.Fatal("the console's admin listener never accepted")
	}

	// The open browser tab: signed in once, three pages a second.
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	base := "http://" + adminAddr
	r, err := cl.PostForm(base+"/console/login", url.Values{"user": {"bench"}, "password": {pw}})
	if err != nil || r.StatusCode != 200 {
		b.Fatalf("console sign-in: %v %v", r, err)
	}
	r.Body.Close()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var views, failed int
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			for _, p := range []string{"/console/", "/console/countries?span=24h", "/console/sessions"} {
				r, err := cl.Get(base + p)
				if err != nil || r.StatusCode != 200 {
					failed++
					continue
				}
				io.Copy(io.Discard, r.Body)
				r.Body.Close()
				views++
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	defer func() { stop(); wg.Wait() }()

	run := func(m *Mailgate) float64 {
		out, err := exec.Command(bench, "logins", "-addr", m.Addr["imaps"], "-proto", "imap", "-c", "64", "-d", "8s",
			"-user", "alice@example.test", "-pass", usersPass(), "-pid", strconv.Itoa(m.cmd.Process.Pid)).CombinedOutput()
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
			b.Logf("round %d: without %.1f/s, with %.1f/s", round+1, rOff, rOn)
			offs, ons, ratios = append(offs, rOff), append(ons, rOn), append(ratios, rOn/rOff)
		}
		slices.Sort(ratios)
		slices.Sort(offs)
		slices.Sort(ons)
		b.ReportMetric(offs[1], "without-logins/s")
		b.ReportMetric(ons[1], "with-logins/s")
		b.ReportMetric(ratios[1], "with/without")
	}
	stop()
	wg.Wait()
	if failed > 0 || views == 0 {
		b.Errorf("console views: %d served, %d failed", views, failed)
	}
	b.Logf("console pages served during the run: %d", views)
}

// usersPass is alice's password in the harness's Dovecot.
func usersPass() string { return users["alice@example.test"] }
