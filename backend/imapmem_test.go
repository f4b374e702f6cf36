package backend

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// startMemIMAP runs go-imap's in-memory server on loopback with users.
func startMemIMAP(t *testing.T, users map[string]string) string {
	t.Helper()
	mem := imapmemserver.New()
	for u, p := range users {
		mem.AddUser(imapmemserver.NewUser(u, p))
	}
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}},
		InsecureAuth: true,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestIMAPMemServer logs in to a real IMAP server implementation with
// awkward credentials, by AUTHENTICATE PLAIN and by LOGIN (quoted strings
// and LITERAL- literals), and uses the session afterwards.
func TestIMAPMemServer(t *testing.T) {
	users := map[string]string{
		"alice@example.test": "alicepass",
		`q"uo\te`:            `p"a\ss`,
		"literal{5}":         "{5}",
		"ünï@exämple.test":   "pässwörd mit space",
	}
	addr := startMemIMAP(t, users)
	for _, forceLogin := range []bool{false, true} {
		for u, p := range users {
			b := &IMAP{Opts: testOpts(t, addr), forceLogin: forceLogin}
			sess, err := b.Login(withTimeout(t), testClient, "T1", u, p)
			if err != nil {
				t.Errorf("forceLogin=%v Login(%q): %v", forceLogin, u, err)
				continue
			}
			if !strings.HasPrefix(string(sess.Reply), "T1 OK") {
				t.Errorf("Reply = %q, want the tagged OK", sess.Reply)
			}
			if _, err := io.WriteString(sess.Conn, "T2 LIST \"\" *\r\n"); err != nil {
				t.Fatal(err)
			}
			_ = sess.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			all, _ := readUntil(sess.Conn, "T2 ")
			if !strings.Contains(all, "T2 OK") {
				t.Errorf("LIST after login: %q", all)
			}
			sess.Conn.Close()

			_, err = b.Login(withTimeout(t), testClient, "T1", u, p+"x")
			wantErr(t, err, ErrAuthFailed)
		}
	}
}

// readUntil reads from r until a line starts with prefix.
func readUntil(r io.Reader, prefix string) (string, error) {
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		sb.Write(buf[:n])
		s := sb.String()
		if strings.HasPrefix(s, prefix) || strings.Contains(s, "\n"+prefix) {
			return s, nil
		}
		if err != nil {
			return s, err
		}
	}
}
