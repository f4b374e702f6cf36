//go:build integration

package integration

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkNginxAuthHTTP (issue #19): auth_http decisions per second and
// their p99, for refused logins (a denied country: no backend contact)
// and allowed ones (the password checked by an IMAP login to the real
// Dovecot, or for mailgate also on Dovecot's auth socket), answered by
// mailgate's adapter and by the stand-in for the
// old PHP script (testdata/authhttp/auth.php under `php -S` with
// PHP_CLI_SERVER_WORKERS=4), in the same run, by the same client: 8
// workers each asking as nginx does (HTTP/1.0 style, a new connection per
// request). mailgate's failure delay is 1 ms and its guard counts nothing
// here (the PHP script has neither), so both measure the decision itself.
//
//	go test -tags integration ./integration -run '^$' -bench BenchmarkNginxAuthHTTP -benchtime 400x
func BenchmarkNginxAuthHTTP(b *testing.B) {
	hs := need(b)
	php, err := exec.LookPath("php")
	if err != nil {
		b.Skip("php-cli not installed")
	}
	dir := b.TempDir()
	secretFile := filepath.Join(dir, "secret")
	userFile := filepath.Join(dir, "user-allowed.php")
	for f, body := range map[string]string{secretFile: nginxSecret, userFile: "/*\ncarol@example.test|RU\n*/\n"} {
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	_, mgURL := startBenchAdapter(b, userFile, secretFile, "verify: imap")
	_, mgAuthURL := startBenchAdapter(b, userFile, secretFile, fmt.Sprintf("verify: dovecot-auth, dovecot_auth: %q", hs.stack.AuthSocket))

	pp, err := freePorts(1)
	if err != nil {
		b.Fatal(err)
	}
	phpAddr := addr(pp[0])
	script := filepath.Join(hs.repo, "integration", "testdata", "authhttp", "auth.php")
	cmd := exec.Command(php, "-S", phpAddr, script)
	cmd.Env = append(os.Environ(), "PHP_CLI_SERVER_WORKERS=4",
		"AUTH_USERFILE="+userFile, "AUTH_GEOCSV="+filepath.Join(filepath.Dir(script), "geo.csv"), "AUTH_ALLOW=GB",
		"AUTH_IMAP="+addr(hs.imapPort), "AUTH_SERVER_IMAP="+addr(hs.imapPort),
		"AUTH_SERVER_POP3="+addr(hs.pop3Port), "AUTH_SERVER_SMTP="+addr(hs.smtpPort))
	cmd.Stdout, cmd.Stderr = nil, nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its workers are its children
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		cmd.Wait()
	})
	if !waitFor(func() bool { return accepting(phpAddr) }, eventually) {
		b.Fatal("php -S never accepted")
	}
	phpURL := "http://" + phpAddr + "/auth"

	for _, kind := range []struct{ name, ip, want string }{
		{"refused", "127.0.0.42", ""},
		{"allowed", "127.0.0.1", "OK"},
	} {
		for _, srv := range []struct{ name, url string }{{"mailgate", mgURL}, {"mailgate-dovecot-auth", mgAuthURL}, {"php", phpURL}} {
			b.Run(kind.name+"/"+srv.name, func(b *testing.B) {
				benchAuthHTTP(b, srv.url, kind.ip, kind.want)
			})
		}
	}
}

// startBenchAdapter starts a mailgate whose adapter checks passwords as
// verify says, and returns it and the adapter's URL.
func startBenchAdapter(b testing.TB, userFile, secretFile, verify string) (*Mailgate, string) {
	hs := need(b)
	var mgIMAPS, adapterPort int
	pick := func() {
		p, err := freePorts(2)
		if err != nil {
			b.Fatal(err)
		}
		mgIMAPS, adapterPort = p[0], p[1]
	}
	pick()
	m := launchRetrying(b, func() string {
		return fmt.Sprintf(`hostname: mail.example.test
log: {level: warn, format: text}
listeners:
  - {name: imaps, protocol: imap, address: "127.0.0.1:%d", tls: implicit}
backends:
  imap: {address: "127.0.0.1:%d", forward_client: true}
  pop3: {address: "127.0.0.1:%d", forward_client: true}
  smtp: {address: "127.0.0.1:%d", xclient: true}
tls: {self_signed: true}
geo:
  overrides: {"127.0.0.1/32": GB, "127.0.0.42/32": RU}
policy: {allow_countries: [GB], user_file: %q}
limits: {auth_failure_delay: 1ms}
guard: {tarpit: {after: 0}, ban: {ip_after: 0, network_after: 0}, lockout: {after: 0, per_ip_after: 0},
        failure_penalty: {init: 0s}, backend: {max_concurrent: 0}}
admin: {address: "off"}
adapters:
  nginx: {listen: "127.0.0.1:%d", secret_file: %q, %s}
`, mgIMAPS, hs.imapPort, hs.pop3Port, hs.smtpPort, userFile, adapterPort, secretFile, verify)
	}, pick)
	if !waitFor(func() bool { return accepting(addr(adapterPort)) }, eventually) {
		b.Fatalf("adapter never accepted:\n%s", m.Log())
	}
	return m, "http://" + addr(adapterPort) + "/auth"
}

// benchAuthHTTP sends b.N auth_http requests from 8 workers and reports
// decisions/s and the p99 latency. want is the Auth-Status every answer
// must have ("" for any refusal).
func benchAuthHTTP(b *testing.B, url, clientIP, want string) {
	const workers = 8
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	lat := make([]time.Duration, b.N)
	var next int
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	b.ResetTimer()
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= b.N {
					return
				}
				req, _ := http.NewRequest("GET", url, nil)
				for k, v := range map[string]string{"Auth-Method": "plain", "Auth-User": "alice%40example.test",
					"Auth-Pass": users["alice@example.test"], "Auth-Protocol": "imap", "Auth-Login-Attempt": "1",
					"Client-IP": clientIP, "Client-Host": "[UNAVAILABLE]", "X-Mailgate-Secret": nginxSecret} {
					req.Header.Set(k, v)
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				lat[i] = time.Since(t0)
				st := resp.Header.Get("Auth-Status")
				if (want == "OK") != (st == "OK") || st == "" {
					errs <- fmt.Errorf("%s from %s: Auth-Status %q", url, clientIP, st)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
