//go:build integration

package integration

// Issue #14 findings 2 and 3 against the real Dovecot: the client's IMAP
// tag never reaches the backend (an odd but legal one once hung the login
// for the 30s backend timeout, holding a backend slot), and no failure
// after the policy decision differs from the uniform failure in text or
// timing.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// oddTags are legal IMAP tags (RFC 9051 9: any ASTRING-CHAR but "+") that
// nginx would not forward; the last two are longer than the 64 octets the
// backend code once refused after the decision (the front's only bound
// is its 8192-octet command line).
var oddTags = []string{"a]1", "]", "x]]y", "~!#$&'/:;<=>?@[^`|]", strings.Repeat("T", 100), strings.Repeat("L", 4000)}

// oddTagPrompt bounds an odd-tag login's reply: well under the old 30s
// hang, well over Dovecot's 2s failure delay plus mailgate's 3s.
const oddTagPrompt = 8 * time.Second

// startTagMailgate runs mailgate with one plaintext IMAP listener behind
// trusted PROXY headers and extra top-level YAML, against the harness's
// Dovecot, with the default failure delay (3s).
func startTagMailgate(t *testing.T, extra string) *Mailgate {
	hs := need(t)
	return startMailgate(t, func(port int) string {
		return fmt.Sprintf(`hostname: mail.example.test
log: {level: debug, format: text}
admin: {address: "off"}
listeners:
  - {name: imap-lb, protocol: imap, address: "127.0.0.1:%d", tls: none, proxy_protocol_from: ["127.0.0.1/32"], plaintext_from: ["0.0.0.0/0"]}
backends:
  imap: {address: "127.0.0.1:%d", tls: none, forward_client: true}
  pop3: {address: "127.0.0.1:%d", tls: none}
  smtp: {address: "127.0.0.1:%d", tls: none}
tls: {self_signed: true}
%s
`, port, hs.imapPort, hs.pop3Port, hs.smtpPort, extra)
	})
}

// taggedLogin connects claiming src, sends LOGIN under tag and returns
// the tagged reply (session id normalized) and the time it took.
func taggedLogin(lb, src, tag, user, pass string) (string, time.Duration, error) {
	c, err := net.DialTimeout("tcp", lb, 10*time.Second)
	if err != nil {
		return "", 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, proxyHeader(src, lb)); err != nil {
		return "", 0, err
	}
	if g, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(g, "* OK") {
		return "", 0, fmt.Errorf("greeting %q: %v", g, err)
	}
	start := time.Now()
	if _, err := fmt.Fprintf(c, "%s LOGIN %s %s\r\n", tag, imapQuote(user), imapQuote(pass)); err != nil {
		return "", 0, err
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", time.Since(start), fmt.Errorf("after %v: %w", time.Since(start).Round(time.Millisecond), err)
		}
		if strings.HasPrefix(line, tag+" ") {
			return replyID.ReplaceAllString(strings.TrimSpace(line), "(id *)"), time.Since(start), nil
		}
	}
}

// TestIMAPOddTagsLogin: logins under legal but odd tags answer promptly
// and rightly through the real Dovecot: OK with the backend's capability
// code for the right password, the uniform failure for a wrong one.
func TestIMAPOddTagsLogin(t *testing.T) {
	m := startTagMailgate(t, "policy: {allow_countries: [GB, US]}\nguard: {lockout: {after: 0}}")
	lb := m.Addr["imap-lb"]
	src := pickSources(t, 14, 2*len(oddTags), netip.MustParsePrefix(legitNet), "GB")["GB"]
	var wg sync.WaitGroup
	for i, tag := range oddTags {
		wg.Go(func() {
			r, d, err := taggedLogin(lb, src[2*i], tag, "bob@example.test", users["bob@example.test"])
			switch {
			case err != nil:
				t.Errorf("tag %q, right password: %v", tag, err)
			case !strings.HasPrefix(r, tag+" OK [CAPABILITY IMAP4rev1"):
				t.Errorf("tag %q, right password: %q, want %q OK [CAPABILITY ...]", tag, r, tag)
			case d > oddTagPrompt:
				t.Errorf("tag %q, right password: answered after %v", tag, d)
			}
			// A fresh source: Dovecot's penalty for failures from one
			// address would slow the next try.
			r, d, err = taggedLogin(lb, src[2*i+1], tag, "bob@example.test", wrongPass)
			switch {
			case err != nil:
				t.Errorf("tag %q, wrong password: %v", tag, err)
			case r != tag+" NO [AUTHENTICATIONFAILED] Authentication failed (id *)":
				t.Errorf("tag %q, wrong password: %q, want the uniform failure", tag, r)
			case d > oddTagPrompt:
				t.Errorf("tag %q, wrong password: answered after %v", tag, d)
			}
		})
	}
	wg.Wait()
	if strings.Contains(m.Log(), `msg="backend unavailable"`) {
		t.Errorf("odd tags ended in backend errors:\n%s", m.Log())
	}
}

// TestIMAPOddTagsKeepBackendSlots: a burst of logins under a tag Dovecot
// cannot parse (once each held a backend slot for 30s) leaves the backend
// slots free for the next login, which succeeds.
func TestIMAPOddTagsKeepBackendSlots(t *testing.T) {
	const burst = 12
	m := startTagMailgate(t, "policy: {allow_countries: [GB, US]}\nguard: {lockout: {after: 0}, backend: {max_concurrent: 4}}")
	lb := m.Addr["imap-lb"]
	src := pickSources(t, 15, 5, netip.MustParsePrefix(legitNet), "GB")["GB"]
	replies := make(chan string, burst)
	for i := range burst {
		go func() {
			r, _, err := taggedLogin(lb, src[i%4], "a]1", "alice@example.test", users["alice@example.test"])
			if err != nil {
				r = err.Error()
			}
			replies <- r
		}()
	}
	deadline := time.After(12 * time.Second)
	var got []string
wait:
	for range burst {
		select {
		case r := <-replies:
			got = append(got, r)
		case <-deadline:
			t.Errorf("%d of %d odd-tag logins unanswered after 12s", burst-len(got), burst)
			break wait
		}
	}
	for _, r := range got {
		if !strings.HasPrefix(r, "a]1 OK ") {
			t.Errorf("odd-tag login got %q, want a]1 OK", r)
		}
	}
	r, _, err := taggedLogin(lb, src[4], "t1", "bob@example.test", users["bob@example.test"])
	if err != nil || !strings.HasPrefix(r, "t1 OK ") {
		t.Errorf("login after the burst: %q, %v; want t1 OK", r, err)
	}
}

// TestIMAPPostDecisionFailureLooksLikeDenial: from a denied country, a
// login that has a travel exception (allowed, so it reaches the backend
// step) and one that has not (denied) get the same reply after the same
// delay, under a tag the old backend code refused after the decision.
func TestIMAPPostDecisionFailureLooksLikeDenial(t *testing.T) {
	const tries = 3
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rules, []byte("rules:\n  - {users: carol@example.test, allow: RU, note: travelling}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := startTagMailgate(t, fmt.Sprintf("policy: {allow_countries: [GB, US], rules_file: %q}\nguard: {lockout: {after: 0}}\nlimits: {auth_failure_delay: %s}", rules, timingDelay))
	lb := m.Addr["imap-lb"]
	src := pickSources(t, 16, 2*tries, netip.MustParsePrefix(legitNet), "RU")["RU"]
	tag := strings.Repeat("T", 100)
	type result struct {
		who   string
		reply string
		d     time.Duration
	}
	var results []result
	for i := range tries {
		for j, who := range []string{"carol@example.test", "alice@example.test"} {
			// Wrong passwords: the exception must not reveal itself by a
			// success either.
			r, d, err := taggedLogin(lb, src[2*i+j], tag, who, wrongPass)
			if err != nil {
				t.Fatalf("%s: %v", who, err)
			}
			results = append(results, result{who, r, d})
		}
	}
	want := tag + " NO [AUTHENTICATIONFAILED] Authentication failed (id *)"
	for _, r := range results {
		if r.reply != want {
			t.Errorf("%s from RU: %q, want %q", r.who, r.reply, want)
		}
		// Dovecot answers a wrong password after 2s, mailgate pads every
		// failure to timingDelay (3s): each must end at or after 3s, and
		// not much later (a generous bound for a busy machine).
		if r.d < timingDelay || r.d >= timingDelay+4*time.Second {
			t.Errorf("%s from RU: answered after %v, want between %v and %v", r.who, r.d.Round(time.Millisecond), timingDelay, timingDelay+4*time.Second)
		}
	}
	m.WaitCount(t, "COUNTRYFAILED", tries)
	m.WaitCount(t, "AUTHFAILED", tries)
}
