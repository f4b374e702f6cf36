//go:build integration

package integration

// The attack simulation of issue #8: ten thousand login attempts from
// many claimed source addresses (PROXY v1 headers from a trusted loopback
// peer; the addresses are only named, no packet goes anywhere) in allowed
// and denied countries, with wrong and right passwords, through the real
// mailgate binary to the real Dovecot. A counting relay between mailgate
// and Dovecot sees every backend connection and login command, so the
// test counts what reached the backend per claimed source and per login,
// while a legitimate user on a trusted network logs in throughout.

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/geo"
)

// --- counting relay ---

// loginRelay forwards TCP connections to Dovecot and counts, per
// connection, the login command mailgate's backend client sends, keyed
// by the client address mailgate forwards in IMAP ID (x-originating-ip)
// and by the login name. It never records passwords.
type loginRelay struct {
	ln     net.Listener
	target string
	conns  atomic.Int64 // backend connections

	mu     sync.Mutex
	bySrc  map[string]int // login commands per forwarded client address
	byUser map[string]int // login commands per login name
	logins int
}

func startRelay(t testing.TB, target string) *loginRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &loginRelay{ln: ln, target: target, bySrc: map[string]int{}, byUser: map[string]int{}}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.conns.Add(1)
			go r.serve(c)
		}
	}()
	return r
}

func (r *loginRelay) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

var (
	idOrigin = regexp.MustCompile(`"x-originating-ip" "([^"]+)"`)
	// A login command as backend.IMAP sends it: AUTHENTICATE PLAIN with
	// or without an initial response, or LOGIN.
	authCmd  = regexp.MustCompile(`(?i)^\S+ (AUTHENTICATE PLAIN|LOGIN)(?: (\S+))?`)
	maxRelay = 64 << 10 // bytes inspected per connection before login
)

func (r *loginRelay) serve(c net.Conn) {
	defer c.Close()
	b, err := net.DialTimeout("tcp", r.target, 5*time.Second)
	if err != nil {
		return
	}
	defer b.Close()
	go func() {
		io.Copy(c, b)
		c.Close()
	}()
	br := bufio.NewReader(io.LimitReader(c, int64(maxRelay)))
	src := "?"
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			if _, werr := io.WriteString(b, line); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
		if m := idOrigin.FindStringSubmatch(line); m != nil {
			src = m[1]
		}
		m := authCmd.FindStringSubmatch(strings.TrimRight(line, "\r\n"))
		if m == nil {
			continue
		}
		user := "?"
		switch {
		case strings.EqualFold(m[1], "LOGIN"):
			user = strings.Trim(m[2], `"`)
		case m[2] != "":
			user = plainUser(m[2])
		default: // no initial response: the next line is the response
			next, err := br.ReadString('\n')
			io.WriteString(b, next)
			if err != nil {
				return
			}
			user = plainUser(strings.TrimSpace(next))
		}
		r.mu.Lock()
		r.logins++
		r.bySrc[src]++
		r.byUser[user]++
		r.mu.Unlock()
		break
	}
	// Logged in or refused: the rest is the session, relayed unread.
	io.Copy(b, br)
	io.Copy(b, c)
}

// plainUser decodes the authentication identity of a SASL PLAIN response.
func plainUser(b64 string) string {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "?"
	}
	parts := strings.Split(string(raw), "\x00")
	if len(parts) != 3 {
		return "?"
	}
	return parts[1]
}

func (r *loginRelay) counts() (total int, bySrc, byUser map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	bySrc, byUser = map[string]int{}, map[string]int{}
	for k, v := range r.bySrc {
		bySrc[k] = v
	}
	for k, v := range r.byUser {
		byUser[k] = v
	}
	return r.logins, bySrc, byUser
}

// --- source addresses ---

// pickSources returns n public IPv4 addresses per wanted country, each in
// its own /24 and outside avoid, placed by mailgate's embedded geo
// database (the one a config without geo.databases uses). The draw is
// seeded, so every run uses the same addresses; tests pass different
// seeds, because Dovecot remembers failures per address for a while (its
// auth penalty) and one test's failures would slow the next one's logins.
func pickSources(t testing.TB, seed uint64, n int, avoid netip.Prefix, countries ...string) map[string][]string {
	t.Helper()
	db, err := geo.Open(geo.Config{WatchInterval: -1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, c := range countries {
		want[c] = true
	}
	out := map[string][]string{}
	seen := map[[3]byte]bool{}
	rng := rand.New(rand.NewPCG(seed, 2026))
	for tries := 0; tries < 5_000_000; tries++ {
		a := [4]byte{byte(1 + rng.IntN(222)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(1 + rng.IntN(254))}
		k := [3]byte{a[0], a[1], a[2]}
		ip := netip.AddrFrom4(a)
		if seen[k] || avoid.Contains(ip) || !ip.IsGlobalUnicast() || ip.IsPrivate() {
			continue
		}
		cc := db.Lookup(ip).Country
		if !want[cc] || len(out[cc]) >= n {
			continue
		}
		seen[k] = true
		out[cc] = append(out[cc], ip.String())
		done := true
		for c := range want {
			done = done && len(out[c]) >= n
		}
		if done {
			return out
		}
	}
	t.Fatalf("embedded geo data has too few /24s in %v", countries)
	return nil
}

// --- the scenario ---

// attackPlan is the size of one simulation.
type attackPlan struct {
	Allowed, PerAllowed   int // sources in allowed countries (GB, US) and attempts each
	Denied, PerDenied     int // sources in a country the policy denies (RU)
	Refused, PerRefused   int // sources in guard.deny_countries (CN)
	Workers               int // concurrent attacking connections
	PerConn               int // login attempts per connection (limits.max_login_attempts)
	LegitEvery            time.Duration
	BanIPAfter, LockAfter int
}

func (p attackPlan) attempts() int {
	return p.Allowed*p.PerAllowed + p.Denied*p.PerDenied + p.Refused*p.PerRefused
}

// fullPlan is the issue's: 10,000 attempts.
var fullPlan = attackPlan{
	Allowed: 100, PerAllowed: 60,
	Denied: 50, PerDenied: 50,
	Refused: 30, PerRefused: 50,
	Workers: 48, PerConn: 10, LegitEvery: 100 * time.Millisecond,
	BanIPAfter: 5, LockAfter: 10,
}

// The legitimate user sits in a trusted office network (GB).
const (
	legitUser = "alice@example.test"
	legitAddr = "81.2.69.142"
	legitNet  = "81.2.69.0/24"
)

// attackResult is what the simulation measured.
type attackResult struct {
	plan                    attackPlan
	elapsed                 time.Duration
	sent                    int64 // LOGIN commands sent
	refusedAtAccept         int64 // connections closed before the greeting
	failed, ok, unavailable int64 // replies to attacking LOGINs
	legitOK, legitFailed    int64
	backendConns            int64
	backendLogins           int
	bySrc, byUser           map[string]int
	kind                    map[string]string // source -> "allowed", "denied", "refused"
}

// attackConfig: like limits.auth_failure_delay at 10 ms, the per-source
// failure padding (guard.failure_penalty) is off, so the run measures
// what reaches the backend rather than waiting out Dovecot's penalty on
// every failure reply (with it on, the same figures took 8m44s).
func attackConfig(p attackPlan, port, relayPort int) string {
	hs := h
	return fmt.Sprintf(`hostname: mail.example.test
log: {level: info, format: text}
admin: {address: "off"}
listeners:
  - {name: imap-lb, protocol: imap, address: "127.0.0.1:%d", tls: none, proxy_protocol_from: ["127.0.0.1/32"], plaintext_from: ["0.0.0.0/0"]}
backends:
  imap: {address: "127.0.0.1:%d", tls: none, forward_client: true, timeout: 60s}
  pop3: {address: "127.0.0.1:%d", tls: none}
  smtp: {address: "127.0.0.1:%d", tls: none}
tls: {self_signed: true}
policy:
  allow_countries: [GB, US]
limits: {auth_failure_delay: 10ms, login_timeout: 5m, max_login_attempts: %d}
guard:
  trusted_networks: [%s]
  deny_countries: [CN]
  tarpit: {after: 3, step: 20ms, max: 200ms}
  ban: {ip_after: %d, network_after: 30, duration: 1h}
  lockout: {after: %d, per_ip_after: 3}
  backend: {max_concurrent: 64, queue: 256, queue_wait: 60s}
  failure_penalty: {init: 0s}
`, port, relayPort, hs.pop3Port, hs.smtpPort, p.PerConn, legitNet, p.BanIPAfter, p.LockAfter)
}

// runAttack starts mailgate behind the counting relay and replays p.
func runAttack(t testing.TB, p attackPlan) *attackResult {
	t.Helper()
	hs := need(t)
	relay := startRelay(t, addr(hs.imapPort))
	db := filepath.Join(t.TempDir(), "audit.db") // the login history is on (audit_attack_test.go)
	m := startMailgate(t, func(port int) string { return attackConfig(p, port, relay.port()) + auditSection(db) })
	lb := m.Addr["imap-lb"]
	res := driveAttack(t, p, relay, func() string { return lb }, 8, rand.NewPCG(1, 2), nil)
	m.stop() // writes the last audit batch
	t.Log(attackAuditFigures(t, db))
	return res
}

// driveAttack runs plan p: sources picked with seed, the bots shuffled by
// shuffle, each connection (the legitimate user's too) to the listener
// next returns, during called once a third of the bots are under way (if
// not nil); the backend's figures come from relay.
func driveAttack(t testing.TB, p attackPlan, relay *loginRelay, next func() string, seed uint64, shuffle rand.Source, during func()) *attackResult {
	t.Helper()
	src := pickSources(t, seed, max(p.Allowed/2, p.Denied, p.Refused), netip.MustParsePrefix(legitNet), "GB", "US", "RU", "CN")
	res := &attackResult{plan: p, kind: map[string]string{}}
	type bot struct {
		addr, kind string
		n          int
	}
	var bots []bot
	for i := range p.Allowed {
		a := src[[]string{"GB", "US"}[i%2]][i/2]
		bots = append(bots, bot{a, "allowed", p.PerAllowed})
	}
	for i := range p.Denied {
		bots = append(bots, bot{src["RU"][i], "denied", p.PerDenied})
	}
	for i := range p.Refused {
		bots = append(bots, bot{src["CN"][i], "refused", p.PerRefused})
	}
	rand.New(shuffle).Shuffle(len(bots), func(i, j int) { bots[i], bots[j] = bots[j], bots[i] })
	for _, b := range bots {
		res.kind[b.addr] = b.kind
	}

	ctx, stop := context.WithCancel(context.Background())
	legitDone := make(chan struct{})
	go func() {
		defer close(legitDone)
		for ctx.Err() == nil {
			if r, _ := imapAttempt(next(), legitAddr, []string{legitUser}, []string{users[legitUser]}); len(r) == 1 && r[0] == replyOK {
				atomic.AddInt64(&res.legitOK, 1)
			} else {
				atomic.AddInt64(&res.legitFailed, 1)
				t.Errorf("legitimate login from the trusted network failed: %v", r)
			}
			select {
			case <-ctx.Done():
			case <-time.After(p.LegitEvery):
			}
		}
	}()

	start := time.Now()
	work := make(chan bot)
	var wg sync.WaitGroup
	for range p.Workers {
		wg.Go(func() {
			for b := range work {
				res.attack(next, b.addr, b.kind, b.n, p.PerConn)
			}
		})
	}
	for i, b := range bots {
		if i == len(bots)/3 && during != nil {
			during()
		}
		work <- b
	}
	close(work)
	wg.Wait()
	res.elapsed = time.Since(start)
	stop()
	<-legitDone
	time.Sleep(200 * time.Millisecond) // let the relay count the last logins
	res.backendConns = relay.conns.Load()
	res.backendLogins, res.bySrc, res.byUser = relay.counts()
	return res
}

// Reply classes of one LOGIN.
const (
	replyOK          = "ok"
	replyFailed      = "failed"
	replyUnavailable = "unavailable"
	replyClosed      = "closed"
)

// attack spends n attempts from addr: wrong passwords against the real
// users and against names that do not exist; sources in denied
// countries also try the right passwords (stolen credentials).
func (res *attackResult) attack(next func() string, addr, kind string, n, perConn int) {
	logins := sortedUsers()
	for i := 0; n > 0; {
		k := min(n, perConn)
		var us, ps []string
		for j := range k {
			u := logins[(i+j)%len(logins)]
			if (i+j)%2 == 1 {
				u = fmt.Sprintf("ghost%d@example.test", (i+j)%7)
			}
			pw := fmt.Sprintf("guess-%s-%d", addr, i+j)
			if kind != "allowed" && (i+j)%3 == 0 && users[u] != "" {
				pw = users[u]
			}
			us, ps = append(us, u), append(ps, pw)
		}
		replies, greeted := imapAttempt(next(), addr, us, ps)
		if !greeted {
			atomic.AddInt64(&res.refusedAtAccept, 1)
			n--
			i++
			continue
		}
		for _, r := range replies {
			atomic.AddInt64(&res.sent, 1)
			switch r {
			case replyOK:
				atomic.AddInt64(&res.ok, 1)
			case replyFailed:
				atomic.AddInt64(&res.failed, 1)
			case replyUnavailable:
				atomic.AddInt64(&res.unavailable, 1)
			}
		}
		// A connection closed early (ban) still spent its first attempt.
		used := max(len(replies), 1)
		n -= used
		i += used
	}
}

// imapAttempt connects to the PROXY listener claiming src and sends the
// logins one after another on one connection. greeted is false when
// mailgate closed the connection without a greeting (refused at accept).
// It stops at the first success (and logs out) or when the connection
// closes.
func imapAttempt(lb, src string, logins, passwords []string) (replies []string, greeted bool) {
	c, err := net.DialTimeout("tcp", lb, 10*time.Second)
	if err != nil {
		return nil, false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Minute))
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, proxyHeader(src, lb)); err != nil {
		return nil, false
	}
	if g, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(g, "* OK") {
		return nil, false
	}
	for i := range logins {
		tag := fmt.Sprintf("a%d", i)
		if _, err := fmt.Fprintf(c, "%s LOGIN %s %s\r\n", tag, imapQuote(logins[i]), imapQuote(passwords[i])); err != nil {
			return append(replies, replyClosed), true
		}
		var line string
		for {
			line, err = br.ReadString('\n')
			if err != nil || strings.HasPrefix(line, tag+" ") {
				break
			}
		}
		switch {
		case err != nil:
			return replies, true
		case strings.HasPrefix(line, tag+" OK"):
			fmt.Fprintf(c, "z LOGOUT\r\n")
			io.Copy(io.Discard, br)
			return append(replies, replyOK), true
		case strings.HasPrefix(line, tag+" NO [UNAVAILABLE]"):
			replies = append(replies, replyUnavailable)
		default:
			replies = append(replies, replyFailed)
		}
	}
	return replies, true
}

// check asserts the targets and returns the figures as a table.
func (res *attackResult) check(t testing.TB) string {
	t.Helper()
	p := res.plan
	byKind := map[string]int{}
	maxAllowed := 0
	for src, n := range res.bySrc {
		k := res.kind[src]
		if src == legitAddr {
			k = "legit"
		}
		byKind[k] += n
		switch k {
		case "denied", "refused":
			t.Errorf("%s source %s reached the backend %d times; want 0", k, src, n)
		case "allowed":
			maxAllowed = max(maxAllowed, n)
			if n > p.BanIPAfter {
				t.Errorf("allowed source %s reached the backend %d times; want at most ban.ip_after=%d", src, n, p.BanIPAfter)
			}
		case "legit":
		default:
			t.Errorf("backend login from unexpected source %q (%d)", src, n)
		}
	}
	// Per login: lockout.after distinct wrong passwords lock it for
	// untrusted sources, and the guard counts attempts in flight with
	// the failures, so no more than lockout.after ever reach the backend.
	maxUser, maxUserName := 0, ""
	for u, n := range res.byUser {
		if u == legitUser {
			n -= byKind["legit"]
		}
		if n > maxUser {
			maxUser, maxUserName = n, u
		}
		if n > p.LockAfter {
			t.Errorf("login %s reached the backend %d times from untrusted sources; want at most lockout.after=%d", u, n, p.LockAfter)
		}
	}
	if res.legitFailed != 0 || res.legitOK < 3 {
		t.Errorf("legitimate user: %d logins ok, %d failed; want all ok, at least 3", res.legitOK, res.legitFailed)
	}
	made := res.sent + res.refusedAtAccept
	if made < int64(p.attempts()) {
		t.Errorf("made %d attempts, want %d", made, p.attempts())
	}
	if res.ok != 0 {
		t.Errorf("%d attacking logins succeeded; the plan's right passwords all come from denied countries", res.ok)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| attempts made (LOGIN commands sent + connections refused at accept) | %d (%d + %d) |\n", made, res.sent, res.refusedAtAccept)
	fmt.Fprintf(&b, "| replies: failed / temporary (backend slots) / ok | %d / %d / %d |\n", res.failed, res.unavailable, res.ok)
	fmt.Fprintf(&b, "| backend connections (relay) | %d |\n", res.backendConns)
	fmt.Fprintf(&b, "| backend logins: all / legitimate user / allowed attackers / denied (RU) / deny_countries (CN) | %d / %d / %d / %d / %d |\n",
		res.backendLogins, byKind["legit"], byKind["allowed"], byKind["denied"], byKind["refused"])
	fmt.Fprintf(&b, "| most backend logins from one allowed source (ban.ip_after %d) | %d |\n", p.BanIPAfter, maxAllowed)
	fmt.Fprintf(&b, "| most backend logins for one login from untrusted sources (lockout.after %d) | %d (%s) |\n", p.LockAfter, maxUser, maxUserName)
	fmt.Fprintf(&b, "| legitimate logins from the trusted network: ok / failed | %d / %d |\n", res.legitOK, res.legitFailed)
	fmt.Fprintf(&b, "| wall time | %v (%.0f attempts/s) |\n", res.elapsed.Round(time.Second), float64(made)/res.elapsed.Seconds())
	return b.String()
}

// TestAttackSimulation replays fullPlan against the real Dovecot and
// checks that denied and banned sources cost the backend nothing and the
// rest no more than the thresholds, while the legitimate user logs in.
func TestAttackSimulation(t *testing.T) {
	if testing.Short() {
		t.Skip("the attack simulation takes minutes")
	}
	res := runAttack(t, fullPlan)
	t.Logf("attack simulation figures:\n%s", res.check(t))
}

// BenchmarkAttackSimulation runs the same scenario once per iteration
// (each with a fresh mailgate) and reports the backend figures per run.
func BenchmarkAttackSimulation(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		res := runAttack(b, fullPlan)
		b.Log("\n" + res.check(b))
		made := float64(res.sent + res.refusedAtAccept)
		b.ReportMetric(float64(res.backendLogins), "backend-logins/run")
		b.ReportMetric(float64(res.backendConns), "backend-conns/run")
		b.ReportMetric(made/res.elapsed.Seconds(), "attempts/s")
	}
}
