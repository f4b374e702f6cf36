package dovecot

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
)

// allowedCID is the cid of the allow that parked login from remote.
func allowedCID(t *testing.T, log, remote, login string) string {
	t.Helper()
	m := regexp.MustCompile(`msg="dovecot policy: allowed; waiting for the outcome" cid=(\S+) proto=imap listener=dovecot-policy remote=`+
		regexp.QuoteMeta(remote)+` user=`+regexp.QuoteMeta(login)+` `).FindAllStringSubmatch(log, -1)
	if len(m) == 0 {
		t.Fatalf("no allow of %s from %s in:\n%s", login, remote, log)
	}
	return m[len(m)-1][1]
}

// passedFromPark reports whether the AUTHPASS of remote has the cid of
// its allow: its report found the attempt still parked.
func passedFromPark(t *testing.T, log, remote, login string) bool {
	t.Helper()
	cid := allowedCID(t, log, remote, login)
	return strings.Contains(log, "msg=AUTHPASS cid="+cid+" proto=imap listener=dovecot-policy remote="+remote+" ")
}

// A full table of parked attempts: many sources send allows and never
// report, and the users' own attempts keep their places. One attacker
// network loses its own attempts first, however many addresses it uses;
// against many networks of one attempt each, a trusted or proven user
// never loses hers.
func TestFullTableAttackersLoseFirst(t *testing.T) {
	gc := quiet()
	gc.TrustedNetworks = []string{"198.51.100.0/24"}
	e := newEnv(t, gc, Config{MaxParked: 8})
	// bob is proven at 192.0.2.77 (a login with its report).
	bob := body("bob@example.test", "192.0.2.77", "B1", "0b0b")
	e.post(t, "allow", bob)
	e.report(t, bob, true, false)

	alice := body("alice@example.test", "192.0.2.5", "A1", "0a0a")    // unproven
	bob2 := body("bob@example.test", "192.0.2.77", "B2", "0b0b")      // proven
	carol := body("carol@example.test", "198.51.100.7", "C1", "0c0c") // trusted
	for _, b := range []map[string]any{alice, bob2, carol} {
		if s := e.post(t, "allow", b); s != 0 {
			t.Fatalf("allow %v = %d", b, s)
		}
	}
	// One network, 100 addresses, 100 logins, no reports.
	for i := range 100 {
		e.post(t, "allow", body(fmt.Sprintf("u%d@example.test", i), fmt.Sprintf("203.0.113.%d", i+1), fmt.Sprintf("X%d", i), "0001"))
	}
	if n := e.h.park.len(); n != 8 {
		t.Fatalf("%d parked, want max_parked 8", n)
	}
	e.report(t, alice, true, false)
	if !passedFromPark(t, e.log.String(), "192.0.2.5", "alice@example.test") {
		t.Errorf("one network's flood displaced an unproven user's attempt:\n%s", e.log.String())
	}
	// Then 200 networks of one attempt each: all of the same weight as
	// an unproven user, never as a proven or trusted one.
	for i := range 200 {
		e.post(t, "allow", body(fmt.Sprintf("v%d@example.test", i), fmt.Sprintf("100.64.%d.1", i), fmt.Sprintf("Y%d", i), "0001"))
	}
	e.report(t, bob2, true, false)
	e.report(t, carol, true, false)
	log := e.log.String()
	if !passedFromPark(t, log, "192.0.2.77", "bob@example.test") {
		t.Errorf("the flood displaced a proven user's attempt:\n%s", log)
	}
	if !passedFromPark(t, log, "198.51.100.7", "carol@example.test") {
		t.Errorf("the flood displaced a trusted user's attempt:\n%s", log)
	}
	if strings.Contains(log, "AUTHFAILED") {
		t.Errorf("a displaced attempt was counted:\n%s", log)
	}
}

// A table full of privileged attempts keeps them: a newcomer from
// elsewhere is answered as judged but not parked, frees its reservation
// at once, and its report is still counted.
func TestFullTableOfPrivilegedKeepsThem(t *testing.T) {
	gc := quiet()
	gc.TrustedNetworks = []string{"198.51.100.0/24"}
	gc.Lockout.PerIPAfter = 1 // a parked attempt would hold the pair
	e := newEnv(t, gc, Config{MaxParked: 2})
	for i := range 2 {
		e.post(t, "allow", body(fmt.Sprintf("t%d@example.test", i), "198.51.100.9", fmt.Sprintf("T%d", i), "0001"))
	}
	stranger := body("alice@example.test", "192.0.2.90", "S1", "0a0a")
	if s := e.post(t, "allow", stranger); s != 0 {
		t.Fatalf("stranger: %d, want 0 (judged, not refused for the full table)", s)
	}
	if n := e.h.park.len(); n != 2 {
		t.Fatalf("%d parked, want the 2 trusted", n)
	}
	// Not parked, so it holds no reservation: another password for the
	// same pair is not held back by it.
	start := time.Now()
	if s := e.post(t, "allow", body("alice@example.test", "192.0.2.90", "S2", "0a0b")); s != 0 || time.Since(start) >= beginWait {
		t.Fatalf("next attempt of the pair: %d after %v", s, time.Since(start))
	}
	e.report(t, stranger, false, false)
	if !strings.Contains(e.log.String(), "msg=AUTHFAILED") {
		t.Fatalf("the report of an attempt not parked was not counted:\n%s", e.log.String())
	}
}

// The lease is no longer than Dovecot needs to check a password and
// report: 5 s by default, 30 s at most.
func TestLeaseIsShort(t *testing.T) {
	if l := (Config{}).WithDefaults().Lease; l > 5*time.Second {
		t.Errorf("default lease %v, want at most 5s", l)
	}
	c := Config{Lease: 31 * time.Second}.WithDefaults()
	if err := c.Validate("adapters.dovecot"); err == nil || !strings.Contains(err.Error(), "adapters.dovecot.lease") {
		t.Errorf("lease 31s: %v, want refused", err)
	}
	c.Lease = 30 * time.Second
	if err := c.Validate("adapters.dovecot"); err != nil {
		t.Errorf("lease 30s: %v", err)
	}
}

// Random parks, takes and expiries keep the table's indexes in step and
// its size within max.
func TestParkingStaysConsistent(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tb := newParking(16)
	now := time.Unix(0, 0)
	key := func() parkKey {
		return parkKey{login: fmt.Sprint(rng.IntN(40)), session: "s",
			remote: netip.AddrFrom4([4]byte{10, byte(rng.IntN(6)), 0, byte(rng.IntN(4))})}
	}
	for i := range 20000 {
		switch rng.IntN(4) {
		case 0, 1:
			tb.park(&parked{key: key(), privileged: rng.IntN(5) == 0, expires: now.Add(time.Duration(rng.IntN(10)) * time.Second)})
		case 2:
			tb.take(key())
		case 3:
			now = now.Add(time.Second)
			tb.expire(now)
		}
		n, priv := 0, 0
		for e := tb.order.Front(); e != nil; e = e.Next() {
			if e.Value.(*parked).privileged {
				priv++
			}
		}
		for j, q := range tb.heavy {
			if q.idx != j || tb.bySrc[q.src] != q || q.l.Len() == 0 {
				t.Fatalf("op %d: heap entry %d out of step", i, j)
			}
			n += q.l.Len()
		}
		if tb.order.Len() > tb.max || tb.order.Len() != len(tb.byKey) || n+priv != tb.order.Len() || len(tb.heavy) != len(tb.bySrc) {
			t.Fatalf("op %d: order %d, keys %d, queued %d + privileged %d, sources %d/%d", i, tb.order.Len(), len(tb.byKey), n, priv, len(tb.heavy), len(tb.bySrc))
		}
	}
}
