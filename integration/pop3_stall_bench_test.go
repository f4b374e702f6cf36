//go:build integration

package integration

import (
	"bufio"
	"encoding/base64"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkPOP3XclientWrites times a POP3 login against the real Dovecot
// the way mailgate's backend client makes it, with XCLIENT and AUTH PLAIN
// in one write (as from 2026-12-06 to 2026-12-07) and with the XCLIENT
// reply read first (now). Dovecot writes the two replies as separate small
// segments without TCP_NODELAY; when both commands come in one write, the
// second reply waits under Nagle's algorithm for an ACK that Linux delays
// by 40 ms. stalls% is the share of logins over 20 ms (the rest take
// about a millisecond); docs/BENCHMARKS.md, "The POP3 login stall".
func BenchmarkPOP3XclientWrites(b *testing.B) {
	hs := need(b)
	ir := base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00alicepass"))
	xclient := "XCLIENT ADDR=" + addrGB + " PORT=40001\r\n"
	auth := "AUTH PLAIN " + ir + "\r\n"
	for _, v := range []struct {
		name   string
		writes []string
	}{
		{"one-write", []string{xclient + auth}},
		{"reply-first", []string{xclient, auth}},
	} {
		b.Run(v.name, func(b *testing.B) {
			var ds []time.Duration
			for b.Loop() {
				ds = append(ds, pop3XclientLogin(b, addr(hs.pop3Port), v.writes))
			}
			slices.Sort(ds)
			stalls := 0
			for _, d := range ds {
				if d > 20*time.Millisecond {
					stalls++
				}
			}
			b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(ds[len(ds)*9/10].Microseconds())/1000, "p90-ms")
			b.ReportMetric(100*float64(stalls)/float64(len(ds)), "stalls%")
		})
	}
}

// pop3XclientLogin makes one login with writes (each answered by one
// "+OK" line per command in it) and returns the time from the first
// write to the last reply.
func pop3XclientLogin(b *testing.B, address string, writes []string) time.Duration {
	b.Helper()
	c, err := net.DialTimeout("tcp", address, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if g, err := br.ReadString('\n'); err != nil || !strings.Contains(g, "[XCLIENT]") {
		b.Fatalf("greeting %q, %v: the harness's Dovecot must offer XCLIENT to loopback", g, err)
	}
	start := time.Now()
	for _, w := range writes {
		if _, err := c.Write([]byte(w)); err != nil {
			b.Fatal(err)
		}
		for range strings.Count(w, "\r\n") {
			if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "+OK") {
				b.Fatalf("reply %q, %v", l, err)
			}
		}
	}
	d := time.Since(start)
	_, _ = c.Write([]byte("QUIT\r\n"))
	return d
}
