package proxy

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/audit"
	"github.com/mailgate/mailgate/internal/testwait"
)

// withAudit gives the test server a real audit database.
func withAudit(t *testing.T, e *testEnv) *audit.Store {
	t.Helper()
	st, err := audit.Open(audit.Config{Path: filepath.Join(t.TempDir(), "audit.db"), BatchInterval: time.Millisecond}, audit.Options{Node: "node1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	o := *e.srv.options()
	o.Auditor = st
	e.srv.Update(o)
	return st
}

// Every kind of outcome reaches the history with its result and cause,
// and the session's TLS parameters.
func TestAuditRecordsEveryOutcome(t *testing.T) {
	e := startServer(t, Listener{TLS: tlsImplicit}, fastLimits())
	st := withAudit(t, e)
	login := func(cmd string) string {
		c := e.dial()
		c.startTLS()
		c.expect("* OK [CAPABILITY ")
		c.send("a ID (\"name\" \"Thunderbird\" \"version\" \"128.1\")\r\n")
		c.expect("* ID ")
		c.expect("a OK")
		c.send(cmd)
		r := c.line()
		c.nc.Close()
		return r
	}
	login("a LOGIN alice secret\r\n")
	login("a LOGIN alice wrong\r\n")
	login("a LOGIN bob secret\r\n")
	login("a LOGIN alice \"\"\r\n")
	e.imap.mu.Lock()
	e.imap.unavailable = true
	e.imap.mu.Unlock()
	login("a LOGIN alice secret\r\n")

	want := map[string]string{
		audit.ResultPass:        "test:2",
		audit.ResultFailed:      "backend refused credentials",
		audit.ResultInvalid:     "empty password",
		audit.ResultUnavailable: "backend unavailable",
	}
	testwait.For(t, "five decisions in the history", func() bool {
		st.Flush()
		s, _ := st.Stats(context.Background())
		return s.Events == 5
	})
	rows, err := st.History(context.Background(), audit.Query{Account: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if c, ok := want[r.Result]; !ok || r.Cause != c {
			t.Errorf("row %s with cause %q, want %q", r.Result, r.Cause, c)
		}
		delete(want, r.Result)
		if r.TLS != "TLS 1.3" || r.Cipher == "" || r.Protocol != "imap" || r.Listener != "test" ||
			r.ClientID != "Thunderbird/128.1" || r.Addr != "127.0.0.1" || r.Node != "node1" {
			t.Errorf("row %+v", r)
		}
	}
	if len(want) != 0 {
		t.Errorf("no rows for %v", want)
	}
	bob, err := st.History(context.Background(), audit.Query{Account: "bob"})
	if err != nil || len(bob) != 1 || bob[0].Result != audit.ResultDenied || bob[0].Cause != "test:1: country RU not allowed" || bob[0].Country != "RU" {
		t.Errorf("bob: %+v, %v", bob, err)
	}
}

// A guard refusal is recorded as result guard with the guard's reason,
// from the address the trusted PROXY header named.
func TestAuditRecordsGuardRefusal(t *testing.T) {
	cfg := quietGuard()
	cfg.Lockout.PerIPAfter = 2
	e, _, _ := startGuarded(t, cfg)
	st := withAudit(t, e)
	c := e.dialFrom("203.0.113.9")
	c.expect("* OK [CAPABILITY")
	for _, p := range []string{"wrong1", "wrong2", "secret"} {
		c.send("a LOGIN alice " + p + "\r\n")
		c.line()
	}
	var rows []audit.Row
	testwait.For(t, "three decisions in the history", func() bool {
		st.Flush()
		rows, _ = st.History(context.Background(), audit.Query{Account: "alice"})
		n := int64(0)
		for _, r := range rows {
			n += r.Count
		}
		return n == 3
	})
	var guarded bool
	for _, r := range rows {
		if r.Addr != "203.0.113.9" || r.TLS != "" {
			t.Errorf("row %+v", r)
		}
		if r.Result == audit.ResultGuard {
			guarded = r.Cause != "" && !strings.HasPrefix(r.Cause, "guard:")
		}
	}
	if !guarded {
		t.Errorf("no guard row with the guard's reason as cause: %+v", rows)
	}
}
