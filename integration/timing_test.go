//go:build integration

package integration

// The "no oracle" timing requirement of issue #8: a login refused because
// of the client's country and a wrong password checked by the real
// Dovecot are answered after delays that differ by less than 10% (median
// over many tries). limits.auth_failure_delay must cover Dovecot's own
// delay for failed logins (auth_failure_delay, 2s by default) for this to
// hold: mailgate pads every failure to its own delay, but cannot make a
// slower backend answer faster.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// timingDelay is limits.auth_failure_delay for the test: above
	// Dovecot's 2s failure delay, with room for its scheduling.
	timingDelay = 3 * time.Second
	// timingTries per kind; timingParallel clients run at once, each
	// alternating kinds, so both see the same load.
	timingTries    = 40
	timingParallel = 8
)

// timedLogin connects claiming src, sends one LOGIN and returns the time
// from sending it to the tagged reply, and the reply.
func timedLogin(lb, src, user, pass string) (time.Duration, string, error) {
	c, err := net.DialTimeout("tcp", lb, 10*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, proxyHeader(src, lb)); err != nil {
		return 0, "", err
	}
	if g, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(g, "* OK") {
		return 0, "", fmt.Errorf("greeting %q: %v", g, err)
	}
	start := time.Now()
	if _, err := fmt.Fprintf(c, "a LOGIN %s %s\r\n", imapQuote(user), imapQuote(pass)); err != nil {
		return 0, "", err
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return 0, "", err
		}
		if strings.HasPrefix(line, "a ") {
			return time.Since(start), replyID.ReplaceAllString(strings.TrimSpace(line), "(id *)"), nil
		}
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestFailureTimingNoOracle: denied-country and wrong-password failures
// through the real Dovecot get the same reply after median delays within
// 10% of each other. Every try comes from a fresh claimed address, so
// neither mailgate's tarpit nor Dovecot's per-address penalty (which would
// be a timing signal of its own) comes into it.
func TestFailureTimingNoOracle(t *testing.T) {
	if testing.Short() {
		t.Skip("the timing test takes about a minute")
	}
	hs := need(t)
	m := startMailgate(t, func(port int) string {
		return fmt.Sprintf(`hostname: mail.example.test
log: {level: info, format: text}
admin: {address: "off"}
listeners:
  - {name: imap-lb, protocol: imap, address: "127.0.0.1:%d", tls: none, proxy_protocol_from: ["127.0.0.1/32"], plaintext_from: ["0.0.0.0/0"]}
backends:
  imap: {address: "127.0.0.1:%d", tls: none, forward_client: true}
  pop3: {address: "127.0.0.1:%d", tls: none}
  smtp: {address: "127.0.0.1:%d", tls: none}
tls: {self_signed: true}
policy:
  allow_countries: [GB, US]
limits: {auth_failure_delay: %s}
guard:
  lockout: {after: 0}
`, port, hs.imapPort, hs.pop3Port, hs.smtpPort, timingDelay)
	})
	lb := m.Addr["imap-lb"]
	src := pickSources(t, 9, timingTries, netip.MustParsePrefix(legitNet), "GB", "RU")

	var mu sync.Mutex
	var denied, wrong []time.Duration
	replies := map[string]int{}
	var wg sync.WaitGroup
	for w := range timingParallel {
		wg.Go(func() {
			for i := w; i < timingTries; i += timingParallel {
				// Alternate which kind goes first, so drift in load
				// cannot favour one.
				kinds := []string{"denied", "wrong"}
				if i%2 == 1 {
					kinds[0], kinds[1] = kinds[1], kinds[0]
				}
				for _, k := range kinds {
					var d time.Duration
					var r string
					var err error
					if k == "denied" {
						// Stolen credentials from a denied country.
						d, r, err = timedLogin(lb, src["RU"][i], "carol@example.test", users["carol@example.test"])
					} else {
						d, r, err = timedLogin(lb, src["GB"][i], "carol@example.test", wrongPass)
					}
					if err != nil {
						t.Errorf("%s try %d: %v", k, i, err)
						return
					}
					mu.Lock()
					replies[r]++
					if k == "denied" {
						denied = append(denied, d)
					} else {
						wrong = append(wrong, d)
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if len(replies) != 1 {
		t.Errorf("failures got different replies: %v", replies)
	}
	md, mw := median(denied), median(wrong)
	diff := float64(md-mw) / float64(max(md, mw))
	if diff < 0 {
		diff = -diff
	}
	t.Logf("median over %d tries each: denied country %v, wrong password %v (differ by %.2f%%); fastest %v / %v, slowest %v / %v",
		len(denied), md.Round(time.Millisecond), mw.Round(time.Millisecond), 100*diff,
		slices.Min(denied).Round(time.Millisecond), slices.Min(wrong).Round(time.Millisecond),
		slices.Max(denied).Round(time.Millisecond), slices.Max(wrong).Round(time.Millisecond))
	if diff >= 0.10 {
		t.Errorf("median failure delays differ by %.1f%% (denied %v, wrong password %v); want under 10%%", 100*diff, md, mw)
	}
	// Both are padded to the configured delay, not answered early.
	if md < timingDelay || mw < timingDelay {
		t.Errorf("failures answered before limits.auth_failure_delay (%v): denied %v, wrong %v", timingDelay, md, mw)
	}
	m.WaitCount(t, "COUNTRYFAILED", timingTries)
	m.WaitCount(t, "AUTHFAILED", timingTries)
}
