package backend

import (
	"errors"
	"strings"
	"testing"
)

// Dovecot's auth socket sees the protocol of the login as its service
// (imap, pop3, smtp), as for its own logins, so passdb lookups and
// per-protocol settings apply as they would; a service mailgate has no
// login for is refused before anything is sent.
func TestVerifyDovecotAuthSendsTheLoginsService(t *testing.T) {
	for _, service := range []string{"imap", "pop3", "smtp"} {
		var rec recorder
		srv := fakeDovecotAuth(t, &rec, func(id, plain string) string { return "OK\t" + id + "\tuser=alice" })
		if err := VerifyDovecotAuthSocket(withTimeout(t), testOpts(t, srv.addr()), srv.addr(), service, testClient, "alice", "s3cret"); err != nil {
			t.Fatalf("%s: %v", service, err)
		}
		got := strings.Join(rec.all(), "|")
		if !strings.Contains(got, "AUTH\t1\tPLAIN\tservice="+service+"\t") {
			t.Errorf("%s: server got %q", service, got)
		}
	}
	var rec recorder
	srv := fakeDovecotAuth(t, &rec, func(id, plain string) string { return "OK\t" + id })
	for _, bad := range []string{"", "sieve", "imap\tmaster=x"} {
		err := VerifyDovecotAuthSocket(withTimeout(t), testOpts(t, srv.addr()), srv.addr(), bad, testClient, "alice", "s3cret")
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("service %q: %v, want ErrUnavailable", bad, err)
		}
	}
	if len(rec.all()) != 0 {
		t.Errorf("a bad service reached the socket: %q", rec.all())
	}
}
