//go:build integration

package integration

// The migration from nginx + the auth_http PHP script, run as
// docs/migrating-from-nginx.md describes it: the old project's
// user-allowed.php with its exact PHP wrapper, linked (not copied) as
// policy.user_file, the guide's config (docs/deploy/examples/same-host.yaml
// with the guide's policy section), legacy syslog lines through a unix
// socket judged by the shipped fail2ban filter under the real
// fail2ban-regex, help-desk allow and revoke, mail relayed to an outside
// domain through the real Postfix, and a rollback checked by the real php.

import (
	"bufio"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// outsideDomain is the "other domain" mail is relayed to. The test points
// the harness's Postfix at a loopback LMTP sink for it (transport_maps), so
// relayed mail really leaves Postfix and nothing goes to any real host.
const outsideDomain = "outside.example"

// Client addresses of the migration tests, placed by geo overrides.
const (
	migUS       = "127.0.0.1"  // US: a default country of the old script
	migRU       = "127.0.0.2"  // RU: allowed only by a user-file exception
	migUnplaced = "127.0.0.3"  // no override: loopback, no country
	migBadPass  = "127.0.0.22" // US: the wrong-password attempt's own address
	migProxyUS  = "192.0.2.10" // US, claimed in a PROXY header: outside Postfix's mynetworks
)

// lmtpSink is a loopback LMTP server that stands for the outside domain's
// mail server. It accepts every message and records its recipients.
type lmtpSink struct {
	ln   net.Listener
	mu   sync.Mutex
	msgs []string // "rcpt1,rcpt2\n<data>"
}

func startLMTPSink(t *testing.T) *lmtpSink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &lmtpSink{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *lmtpSink) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	r := bufio.NewReader(c)
	say := func(l string) { fmt.Fprintf(c, "%s\r\n", l) }
	say("220 sink.outside.example LMTP")
	var rcpts []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "LHLO"):
			say("250-sink.outside.example")
			say("250 8BITMIME")
		case strings.HasPrefix(cmd, "MAIL"), strings.HasPrefix(cmd, "NOOP"):
			say("250 2.0.0 ok")
		case strings.HasPrefix(cmd, "RSET"):
			rcpts = nil
			say("250 2.0.0 ok")
		case strings.HasPrefix(cmd, "RCPT"):
			rcpts = append(rcpts, strings.TrimSpace(line[len("RCPT TO:"):]))
			say("250 2.1.5 ok")
		case cmd == "DATA":
			say("354 go ahead")
			var data strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				data.WriteString(l)
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, strings.Join(rcpts, ",")+"\n"+data.String())
			s.mu.Unlock()
			for range rcpts {
				say("250 2.0.0 delivered")
			}
			rcpts = nil
		case cmd == "QUIT":
			say("221 2.0.0 bye")
			return
		default:
			say("500 5.5.2 what")
		}
	}
}

// received waits for a message whose recipients or data contain substr.
func (s *lmtpSink) received(t *testing.T, substr string) string {
	t.Helper()
	var got string
	if !waitFor(func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, m := range s.msgs {
			if strings.Contains(m, substr) {
				got = m
				return true
			}
		}
		return false
	}, 60*time.Second) {
		t.Fatalf("the outside domain's server never received %q; postfix log:\n%s", substr, need(t).postfixLog())
	}
	return got
}

// routeOutside makes the harness's Postfix deliver mail for outsideDomain
// to a new LMTP sink (transport_maps) until the test ends, and waits until
// Postfix uses the route.
func routeOutside(t *testing.T) *lmtpSink {
	t.Helper()
	hs := need(t)
	postconf, err := lookPath("postconf")
	if err != nil {
		t.Fatal(err)
	}
	postfix, err := lookPath("postfix")
	if err != nil {
		t.Fatal(err)
	}
	sink := startLMTPSink(t)
	conf := hs.stack.PostfixConfDir()
	table := filepath.Join(conf, "transport-outside")
	if err := os.WriteFile(table, []byte(outsideDomain+" lmtp:inet:"+sink.ln.Addr().String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	postfixDo := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	postfixDo(postconf, "-c", conf, "-e", "transport_maps=texthash:"+table)
	postfixDo(postfix, "-c", conf, "reload")
	t.Cleanup(func() {
		postfixDo(postconf, "-c", conf, "-X", "transport_maps")
		postfixDo(postfix, "-c", conf, "reload")
		os.Remove(table)
	})
	// Postfix's processes pick up the new table as they restart: ask the
	// MX-style port (127.0.0.1 is in mynetworks, so relaying is allowed)
	// until a recipient there is accepted instead of refused by the
	// test backend's error transport.
	if !waitFor(func() bool {
		// Errors, a dropped connection during the reload included, mean
		// "not yet".
		nc, err := net.DialTimeout("tcp", addr(hs.smtpPort), 5*time.Second)
		if err != nil {
			return false
		}
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		c, err := smtp.NewClient(nc, "127.0.0.1")
		if err != nil {
			nc.Close()
			return false
		}
		defer c.Close()
		if c.Hello("probe.example.test") != nil || c.Mail("") != nil {
			return false
		}
		ok := c.Rcpt("route-check@"+outsideDomain) == nil
		_ = c.Quit()
		return ok
	}, eventually) {
		t.Fatalf("postfix never routed %s after reload; log:\n%s", outsideDomain, hs.postfixLog())
	}
	return sink
}

// guideConfig is docs/deploy/examples/same-host.yaml with the guide's
// policy section, bound to loopback: its own listener ports, the harness's
// backends (smtp as given), a self-signed certificate, geo overrides for
// the test addresses instead of a database file, and syslog to sock.
type guideConfig struct {
	dir                  string // where files are written
	userFile, rulesFile  string
	sock                 string // syslog unix socket
	smtpPort             int
	verify               string
	xclient              bool
	imaps, smtps, smtpLB int
}

func (g *guideConfig) render(t *testing.T) string {
	t.Helper()
	hs := need(t)
	data, err := os.ReadFile(filepath.Join(hs.repo, "docs", "deploy", "examples", "same-host.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	pol := c["policy"].(map[string]any)
	// The guide's step 3 (checked against the guide by cmd/mailgate's
	// docs tests): the script's default countries, the linked user file
	// and the rules file, here under the test's directory.
	pol["allow_countries"] = []string{"IN", "US"}
	pol["user_file"] = g.userFile
	pol["rules_file"] = g.rulesFile
	pol["watch_interval"] = "200ms"
	delete(pol, "always_allow")
	c["listeners"] = []map[string]any{
		{"name": "imaps", "protocol": "imap", "address": fmt.Sprintf("127.0.0.1:%d", g.imaps), "tls": "implicit"},
		{"name": "smtps", "protocol": "smtp", "address": fmt.Sprintf("127.0.0.1:%d", g.smtps), "tls": "implicit"},
		{"name": "smtps-lb", "protocol": "smtp", "address": fmt.Sprintf("127.0.0.1:%d", g.smtpLB), "tls": "implicit",
			"proxy_protocol_from": []string{"127.0.0.1/32"}},
	}
	be := c["backends"].(map[string]any)
	be["imap"].(map[string]any)["address"] = addr(hs.imapPort)
	be["pop3"].(map[string]any)["address"] = addr(hs.pop3Port)
	smtp := be["smtp"].(map[string]any)
	smtp["address"] = addr(g.smtpPort)
	smtp["verify"] = g.verify
	smtp["xclient"] = g.xclient
	c["hostname"] = "mail.example.test"
	c["drain_timeout"] = "2s"
	c["tls"] = map[string]any{"self_signed": true}
	c["geo"] = map[string]any{"overrides": map[string]string{
		migUS + "/32": "US", migRU + "/32": "RU", migBadPass + "/32": "US", migProxyUS + "/32": "US",
	}}
	delete(c, "geo_update") // no download token here
	c["admin"] = map[string]any{"address": "off"}
	c["limits"] = map[string]any{"auth_failure_delay": "100ms"}
	sl := c["syslog"].(map[string]any)
	sl["address"] = "unixgram:" + g.sock
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// start writes the config, runs check-config on it and starts mailgate,
// picking new listener ports when one was taken meanwhile.
func (g *guideConfig) start(t *testing.T) (m *Mailgate, cfgPath, checkOut string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p, err := freePorts(3)
		if err != nil {
			t.Fatal(err)
		}
		g.imaps, g.smtps, g.smtpLB = p[0], p[1], p[2]
		text := g.render(t)
		cfgPath = filepath.Join(g.dir, "mailgate.yaml")
		if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		checkOut = runMailgate(t, 0, "check-config", "-config", cfgPath)
		m, err = launch(t, text)
		if err == nil {
			return m, cfgPath, checkOut
		}
		if attempt < 3 && strings.Contains(err.Error(), "address already in use") {
			continue
		}
		t.Fatal(err)
	}
}

// runMailgate runs the mailgate binary and fails unless it exits with
// want; it returns standard output and error together.
func runMailgate(t *testing.T, want int, args ...string) string {
	t.Helper()
	hs := need(t)
	if hs.buildErr != nil {
		t.Fatal(hs.buildErr)
	}
	out, err := exec.Command(hs.mailgateBin, args...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != want {
		t.Fatalf("mailgate %s: exit %d, want %d\n%s", strings.Join(args, " "), code, want, out)
	}
	return string(out)
}

// unixSyslog is a syslog daemon's /dev/log: a unix datagram socket.
type unixSyslog struct {
	mu    sync.Mutex
	lines []string
}

func startUnixSyslog(t *testing.T, path string) *unixSyslog {
	t.Helper()
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	s := &unixSyslog{}
	go func() {
		buf := make([]byte, 8192)
		for {
			n, err := pc.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.lines = append(s.lines, strings.TrimRight(string(buf[:n]), "\n"))
			s.mu.Unlock()
		}
	}()
	return s
}

// wait returns the first line containing every one of parts.
func (s *unixSyslog) wait(t *testing.T, parts ...string) string {
	t.Helper()
	var got string
	if !waitFor(func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, l := range s.lines {
			if hasLine(l, parts...) {
				got = l
				return true
			}
		}
		return false
	}, eventually) {
		s.mu.Lock()
		defer s.mu.Unlock()
		t.Fatalf("no syslog line with %q; lines:\n%s", parts, strings.Join(s.lines, "\n"))
	}
	return got
}

// imapLogin logs user in over IMAPS from the local address from with
// curl, as the guide suggests; it reports whether the login worked.
func imapLogin(t *testing.T, m *Mailgate, from, user, pass string) bool {
	t.Helper()
	_, err := runTool(t, "curl", "-sS", "-k", "--max-time", "60", "--interface", from,
		"--url", "imaps://"+m.Addr["imaps"]+"/", "--user", user+":"+pass)
	return err == nil
}

// oldScriptDecides is the old auth script's decision, made by the real
// php: its allow-file rule (each line stripped of " ", "\t", "\r", "\0",
// split on "|", the user compared exactly with the first field and the
// country code or address with the second), else the default countries.
// It is the same rule policy/php_test.go transcribes as phpDecide.
const oldScriptDecides = `<?php
$allowed = in_array($argv[4], array("IN", "US"), true);
foreach (file($argv[1], FILE_IGNORE_NEW_LINES) as $line) {
	$f = explode("|", str_replace(array(" ", "\t", "\r", "\0"), "", $line));
	if (count($f) >= 2 && $f[0] === $argv[2] && ($f[1] === $argv[4] || $f[1] === $argv[3])) {
		$allowed = true;
	}
}
echo $allowed ? "allow" : "deny";
`

func phpPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("php")
	if err != nil {
		if inCI() {
			t.Fatal("php not installed (Debian: apt-get install php-cli); CI=true")
		}
		t.Skip("php not installed (Debian: apt-get install php-cli)")
	}
	return p
}

// oldFile writes the old project's user-allowed.php (policy/testdata, the
// exact wrapper) with this harness's users where the PHP script reads it,
// links it as policy.user_file as the guide's step 3 says, and creates the
// rules file. It returns the link, the real file and the rules file.
func oldFile(t *testing.T, dir string) (link, realFile, rules string) {
	t.Helper()
	hs := need(t)
	orig, err := os.ReadFile(filepath.Join(hs.repo, "policy", "testdata", "user-allowed-crlf.php"))
	if err != nil {
		t.Fatal(err)
	}
	// alice|RU, bob|81.2.69.142, Carol|GB, as the old project's file.
	data := strings.ReplaceAll(string(orig), "example.org", "example.test")
	for _, d := range []string{"www", "policy"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	realFile = filepath.Join(dir, "www", "user-allowed.php")
	if err := os.WriteFile(realFile, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	link = filepath.Join(dir, "policy", "user-allowed.php")
	if err := os.Symlink(realFile, link); err != nil {
		t.Fatal(err)
	}
	rules = filepath.Join(dir, "policy", "rules.yaml")
	if err := os.WriteFile(rules, []byte("rules: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return link, realFile, rules
}

// TestMigrationEndToEnd walks the guide: the old file linked and checked,
// the guide's config checked and started, logins allowed and denied with
// their syslog lines (with and without a placed country) judged by the
// shipped fail2ban filter, a help-desk allow and revoke, a login that
// relays mail to an outside domain through the real Postfix, and a
// rollback in which the real php reads the edited file as the old script
// did and prints nothing for it.
func TestMigrationEndToEnd(t *testing.T) {
	hs := need(t)
	php := phpPath(t)
	dir := t.TempDir()
	link, realFile, rules := oldFile(t, dir)
	if out, err := exec.Command(php, "-f", realFile).CombinedOutput(); err != nil || len(out) != 0 {
		t.Fatalf("php -f on the old file: %v, printed %q; want nothing", err, out)
	}
	sink := routeOutside(t)
	g := &guideConfig{dir: dir, userFile: link, rulesFile: rules, sock: filepath.Join(dir, "log"),
		smtpPort: hs.subPort, verify: "imap", xclient: true}
	sl := startUnixSyslog(t, g.sock)

	// Step 3: the untouched file passes policy check -strict.
	m, cfgPath, check := g.start(t)
	runMailgate(t, 0, "policy", "check", "-strict", "-config", cfgPath)
	// Step 7: check-config is content with the guide's Postfix service.
	if strings.Contains(check, "warning: backends.smtp") {
		t.Errorf("check-config warns about the guide's Postfix service:\n%s", check)
	}

	// Step 8: logins from home, from abroad with and without an
	// exception, from an unplaced address, and a wrong password.
	pass := func(u string) string { return users[u] }
	const alice, bob, carol = "alice@example.test", "bob@example.test", "carol@example.test"
	for _, c := range []struct {
		from, user, pass string
		ok               bool
	}{
		{migUS, bob, pass(bob), true},
		{migRU, bob, pass(bob), false},
		{migRU, alice, pass(alice), true}, // alice@example.test|RU
		{migUnplaced, carol, pass(carol), false},
		{migBadPass, bob, wrongPass, false},
	} {
		if got := imapLogin(t, m, c.from, c.user, c.pass); got != c.ok {
			t.Fatalf("IMAPS login of %s from %s: ok %v, want %v", c.user, c.from, got, c.ok)
		}
	}
	sl.wait(t, "NGINXMAILAUTH", bob+" : AUTHPASS|imap "+migUS+"|US|")
	sl.wait(t, "NGINXMAILAUTH", bob+" : COUNTRYFAILED|imap "+migRU+"|RU|")
	sl.wait(t, "NGINXMAILAUTH", alice+" : AUTHPASS|imap "+migRU+"|RU|")
	// An address without a country: its line has the script's four
	// fields with "-" for code and name, as the script wrote them, and the
	// filter below counts it.
	unplaced := sl.wait(t, "NGINXMAILAUTH", carol+" : COUNTRYFAILED|imap "+migUnplaced+"|")
	if !strings.HasSuffix(strings.TrimRight(unplaced, "\r\n\x00"), "COUNTRYFAILED|imap "+migUnplaced+"|-|-") {
		t.Errorf("unplaced address: %q, want it to end in COUNTRYFAILED|imap %s|-|-", unplaced, migUnplaced)
	}
	failed := sl.wait(t, "NGINXMAILAUTH", bob+" : AUTHFAILED|imap "+migBadPass+"|US|")
	// LOCAL0.info, as the script logged every line: an rsyslog rule such
	// as local0.=info still gets the failures.
	for _, l := range []string{unplaced, failed} {
		if !strings.HasPrefix(l, "<134>") {
			t.Errorf("failure line %q: want priority <134> (local0.info)", l)
		}
	}

	// The help desk: bob may travel to Russia, alice's exception ends.
	reloads := strings.Count(m.Log(), "policy: reloaded after a file change")
	out := runMailgate(t, 0, "allow", "-config", cfgPath, bob, "RU")
	out += runMailgate(t, 0, "revoke", "-config", cfgPath, alice, "RU")
	t.Logf("help desk:\n%s", out)
	m.WaitCount(t, "policy: reloaded after a file change", reloads+1)
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("policy.user_file is no longer a link: %v %v", fi, err)
	}
	if !imapLogin(t, m, migRU, bob, pass(bob)) {
		t.Error("bob denied from RU after mailgate allow")
	}
	if imapLogin(t, m, migRU, alice, pass(alice)) {
		t.Error("alice allowed from RU after mailgate revoke")
	}

	// A logged-in user sends to an outside domain: Postfix relays it.
	msg := makeMessage(bob, "friend@"+outsideDomain, "relayed by the guide's setup", 500)
	if o, err := swaks(t, m.Addr["smtps"], "--tls-on-connect", "PLAIN", bob, pass(bob), "friend@"+outsideDomain, msg); err != nil {
		t.Fatalf("swaks to %s: %v\n%s", outsideDomain, err, o)
	}
	sink.received(t, "relayed by the guide's setup")

	// fail2ban: the shipped filter under the real fail2ban-regex counts
	// exactly the failures, placed or not, from the lines syslog got.
	sl.wait(t, alice+" : COUNTRYFAILED|imap "+migRU+"|RU|")
	sl.mu.Lock()
	var file strings.Builder
	for _, l := range sl.lines {
		file.WriteString(l[strings.IndexByte(l, '>')+1:] + "\n") // drop <PRI> as syslog daemons do
	}
	sl.mu.Unlock()
	f2b, err := exec.LookPath("fail2ban-regex")
	if err != nil {
		if inCI() {
			t.Fatal("fail2ban-regex not installed; CI=true")
		}
		t.Log("fail2ban-regex not installed: filter not checked")
	} else {
		logPath := filepath.Join(dir, "mail.log")
		if err := os.WriteFile(logPath, []byte(file.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		filter := filepath.Join(hs.repo, "docs", "deploy", "fail2ban", "filter.d", "mailgate.conf")
		o, err := exec.Command(f2b, "-o", "ip", logPath, filter).CombinedOutput()
		if err != nil {
			t.Fatalf("fail2ban-regex: %v\n%s", err, o)
		}
		got := strings.Fields(string(o))
		slices.Sort(got)
		want := []string{migRU, migRU, migBadPass, migUnplaced} // bob, then alice from RU
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("fail2ban filter found %q, want %q in:\n%s", got, want, file.String())
		}
	}

	// Rollback: mailgate stops; the old script reads the one file.
	m.stop()
	edited, err := os.ReadFile(realFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(edited), "bob@example.test|RU\r\n*/ \r\n?>\r\n") || strings.Contains(string(edited), "alice@example.test|RU") {
		t.Errorf("the old script's file after allow and revoke:\n%q", edited)
	}
	if o, err := exec.Command(php, "-f", realFile).CombinedOutput(); err != nil || len(o) != 0 {
		t.Errorf("php -f on the edited file: %v, printed %q; want nothing (entries outside the wrapper leak)", err, o)
	}
	script := filepath.Join(dir, "old-script.php")
	if err := os.WriteFile(script, []byte(oldScriptDecides), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ user, ip, cc, want string }{
		{bob, "203.0.113.9", "RU", "allow"},  // allowed by the help desk
		{alice, "203.0.113.9", "RU", "deny"}, // revoked by the help desk
		{bob, "81.2.69.142", "GB", "allow"},  // the old IP entry
		{"Carol@example.test", "81.2.69.1", "GB", "allow"},
		{carol, "203.0.113.9", "DE", "deny"},
		{alice, "198.51.100.1", "US", "allow"}, // default countries
	} {
		o, err := exec.Command(php, "-f", script, realFile, c.user, c.ip, c.cc).CombinedOutput()
		if err != nil || string(o) != c.want {
			t.Errorf("old script after rollback: %s from %s (%s) = %q %v, want %s", c.user, c.ip, c.cc, o, err, c.want)
		}
	}
}

// TestMigrationRelayEachConfig: a user logged in through mailgate from
// an address outside Postfix's mynetworks sends to an outside domain,
// against the real Postfix in each supported configuration; check-config
// warns exactly where Postfix refuses, and the warning names the fix.
func TestMigrationRelayEachConfig(t *testing.T) {
	hs := need(t)
	sink := routeOutside(t)
	for _, c := range []struct {
		name    string
		port    int
		verify  string
		xclient bool
		relays  bool
	}{
		{"imap+xclient at the SASL service", hs.subPort, "imap", true, true},
		{"smtp-auth at the SASL service", hs.subPort, "smtp-auth", true, true},
		{"imap without xclient at port 25 (mynetworks)", hs.smtpPort, "imap", false, true},
		{"imap+xclient at port 25 without SASL", hs.smtpPort, "imap", true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			link, _, rules := oldFile(t, dir)
			g := &guideConfig{dir: dir, userFile: link, rulesFile: rules, sock: filepath.Join(dir, "log"),
				smtpPort: c.port, verify: c.verify, xclient: c.xclient}
			startUnixSyslog(t, g.sock)
			m, _, check := g.start(t)
			warned := strings.Contains(check, "warning: backends.smtp")
			if warned == c.relays {
				t.Errorf("check-config warned %v, want %v:\n%s", warned, !c.relays, check)
			}
			if warned && (!strings.Contains(check, "Relay access denied") || !strings.Contains(check, "smtpd_sasl_auth_enable=yes")) {
				t.Errorf("check-config's warning lacks the denial or the fix:\n%s", check)
			}
			l := smtpDialog(t, "", m.Addr["smtps-lb"], migProxyUS, false)
			if r := l.authPlain("bob@example.test", users["bob@example.test"]); !strings.HasPrefix(r, "235") {
				t.Fatalf("AUTH = %q, want 235", r)
			}
			subject := "relay " + c.name
			rcpt := "friend@" + outsideDomain
			l.send("MAIL FROM:<bob@example.test>\r\n")
			expectCode(t, l, "250")
			l.send("RCPT TO:<" + rcpt + ">\r\n")
			r := l.smtpReply()
			last := r[len(r)-1]
			if !c.relays {
				if !strings.HasPrefix(last, "554 5.7.1") || !strings.Contains(last, "Relay access denied") {
					t.Fatalf("RCPT to %s = %q, want 554 5.7.1 Relay access denied", outsideDomain, r)
				}
				return
			}
			if !strings.HasPrefix(last, "250") {
				t.Fatalf("RCPT to %s = %q, want 250", outsideDomain, r)
			}
			l.send("DATA\r\n")
			expectCode(t, l, "354")
			l.send(string(makeMessage("bob@example.test", rcpt, subject, 300)) + ".\r\n")
			expectCode(t, l, "250")
			l.send("QUIT\r\n")
			sink.received(t, subject)
		})
	}
}
