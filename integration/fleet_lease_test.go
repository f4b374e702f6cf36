//go:build integration

package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// A node that dies holding reservations (a crash: no Finish, no
// renewal) keeps a source's budget held no longer than the default
// guard.shared.lease, against the real redis-server.
func TestFleetKilledNodeLeasesEnd(t *testing.T) {
	rs := redisOnly(t, "")
	c := storeGuardConfig(t, rs.Addr()) // ip_after 3, default lease
	lease := c.Shared.Lease
	a, b := startStoreNode(t, c), startStoreNode(t, c)
	const src = "198.51.100.40"
	for i := range 3 {
		if v := a.g.Attempt("u", netip.MustParseAddr(src), "p"+string(rune('0'+i))).Begin(context.Background()); !v.Allow {
			t.Fatalf("attempt %d: %+v", i, v)
		}
	}
	if !b.heldBack(src) {
		t.Fatal("node a's reservations did not count on node b")
	}
	a.stop()
	died := time.Now()
	// The documented default (docs/fleet.md), a third of it for a
	// renewal that may have just happened, and generous slack for a
	// busy machine.
	const defaultLease = 15 * time.Second
	bound := defaultLease + defaultLease/3 + 5*time.Second
	for b.heldBack(src) {
		if time.Since(died) > bound {
			t.Fatalf("reservations of a dead node still held %v after it died (guard.shared.lease %v)", time.Since(died).Round(time.Second), lease)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("freed %v after the node died (guard.shared.lease %v)", time.Since(died).Round(100*time.Millisecond), lease)
	if v := b.g.Attempt("u", netip.MustParseAddr(src), "r").Begin(context.Background()); !v.Allow {
		t.Fatalf("after the dead node's leases ended: %+v", v)
	}
}

// The real binary: a node killed (SIGKILL) while a login it let through
// is still at the backend (one that never answers) leaves the login's
// reservation in the store no longer than the default lease; while the
// node lived, it renewed the reservation past that lease.
func TestFleetKilledNodeProcessLeaseEnds(t *testing.T) {
	hs := need(t)
	rs := needRedis(t, "")
	dir := t.TempDir()
	key, pw := filepath.Join(dir, "hash-key"), filepath.Join(dir, "store-password")
	if err := os.WriteFile(key, []byte("fleet-hash-key-for-the-integration-tests\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pw, []byte("fleet-store-password-0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A backend that accepts and never says a word: the login stays in
	// flight until the node dies.
	stall, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stall.Close() })
	var held []net.Conn
	var hmu sync.Mutex
	go func() {
		for {
			c, err := stall.Accept()
			if err != nil {
				return
			}
			hmu.Lock()
			held = append(held, c)
			hmu.Unlock()
		}
	}()
	t.Cleanup(func() {
		hmu.Lock()
		defer hmu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	m := startMailgate(t, func(port int) string {
		return fmt.Sprintf(`hostname: mail.example.test
log: {level: info, format: text}
admin: {address: "off"}
listeners:
  - {name: imap, protocol: imap, address: "127.0.0.1:%d", tls: none, plaintext_from: ["127.0.0.0/8"]}
backends:
  imap: {address: %q, tls: none, login_timeout: 2m}
  pop3: {address: "127.0.0.1:%d", tls: none}
  smtp: {address: "127.0.0.1:%d", tls: none}
tls: {self_signed: true}
geo: {overrides: {"127.0.0.1/32": GB}}
policy: {allow_countries: [GB]}
limits: {login_timeout: 5m}
guard:
  tarpit: {after: 1000}
  shared: {addresses: [%q], username: mailgate, password_file: %q, hash_key_file: %q}
`, port, stall.Addr().String(), hs.pop3Port, hs.smtpPort, rs.Addr(), pw, key)
	})
	m.WaitLog(t, "fleet: shared store reachable")
	c, err := net.Dial("tcp", m.Addr["imap"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("a LOGIN alice@example.test secret\r\n")); err != nil {
		t.Fatal(err)
	}
	sc := storeClient(t, rs.Addr())
	leases := func() int64 {
		n, err := sc.ZCount(context.Background(), "mailgate:li:127.0.0.1", "("+strconv.FormatInt(time.Now().UnixMilli(), 10), "+inf").Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if !waitFor(func() bool { return leases() == 1 }, eventually) {
		t.Fatalf("no reservation of the login in the store: %d", leases())
	}
	const defaultLease = 15 * time.Second
	time.Sleep(defaultLease + 3*time.Second)
	if n := leases(); n != 1 {
		t.Fatalf("a login still at the backend lost its reservation after the lease (%d live): not renewed", n)
	}
	if err := m.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-m.done
	died := time.Now()
	bound := defaultLease + defaultLease/3 + 5*time.Second
	if !waitFor(func() bool { return leases() == 0 }, bound) {
		t.Fatalf("the killed node's reservation still live %v after the kill (default lease %v)", bound, defaultLease)
	}
	t.Logf("reservation ended %v after the kill (default lease %v)", time.Since(died).Round(100*time.Millisecond), defaultLease)
}
