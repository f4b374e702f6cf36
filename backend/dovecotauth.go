package backend

// A client of Dovecot's authentication protocol, the one Postfix speaks
// for SASL (doc.dovecot.org, "Authentication Protocol"): it checks a
// password on Dovecot's auth socket (a unix_listener or inet_listener of
// service auth) without starting an IMAP session. It is SMTP's third
// verify mode, `dovecot-auth`.
//
// One connection per check: the server greets (VERSION, MECH..., SPID,
// CUID, COOKIE, DONE), we answer VERSION and CPID, send one AUTH with
// PLAIN and its initial response, read OK or FAIL, and close. The
// protocol could multiplex many checks on one connection by id; the
// handshake on a local socket costs a few hundred microseconds against
// Dovecot's own password check, so a pool is not worth its failure modes
// (a half-dead shared connection failing many logins at once).
//
// Every field we send is ours: the service name (imap, pop3 or smtp, the
// protocol of the login), addresses formatted from
// netip values, the session id only when it is plain alphanumeric, and the
// credentials inside base64. The server's lines are read bounded
// (maxLineLen, maxReplyLines) and parsed strictly.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// VerifyDovecotAuth checks the password on Dovecot's auth socket
// (SMTP.DovecotAuth) and then opens the session as in imap mode.
const VerifyDovecotAuth = "dovecot-auth"

// dovecotAuthID is the id of our one request on a connection.
const dovecotAuthID = "1"

// DovecotAuthNetwork splits a dovecot_auth address into the network and
// address to dial: an absolute path is a unix socket, anything else
// host:port over TCP.
func DovecotAuthNetwork(addr string) (network, address string, err error) {
	if strings.HasPrefix(addr, "/") {
		return "unix", addr, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("%q is neither an absolute socket path nor host:port: %v", addr, err)
	}
	if host == "" {
		return "", "", fmt.Errorf("%q has no host", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", "", fmt.Errorf("%q has no valid port", addr)
	}
	return "tcp", addr, nil
}

// dovecotServices are the services a check may name: Dovecot's own
// protocol names for the logins mailgate judges.
var dovecotServices = map[string]bool{"imap": true, "pop3": true, "smtp": true}

// dovecotAuth checks user and pass for c, a login to service, on the auth
// socket at addr. It returns nil (password right), ErrAuthFailed (wrong password, unknown or
// disabled user) or ErrUnavailable (socket down, timeout, FAIL with temp,
// anything unexpected).
func dovecotAuth(ctx context.Context, o Options, addr, service string, c Client, user, pass string) error {
	if !dovecotServices[service] {
		return fmt.Errorf("%w: dovecot-auth: service %q is not imap, pop3 or smtp", ErrUnavailable, service)
	}
	network, address, err := DovecotAuthNetwork(addr)
	if err != nil {
		return fmt.Errorf("%w: dovecot-auth: %v", ErrUnavailable, err)
	}
	o = o.withDefaults()
	o.Address = addr // error text names the socket
	log := o.Logger.With("backend", "dovecot-auth", "cid", c.Session)
	lctx, lcancel := context.WithTimeoutCause(ctx, o.LoginTimeout, errLoginTimeout)
	dctx, cancel := context.WithTimeout(lctx, o.ConnectTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, network, address)
	if err != nil {
		lcancel()
		return fmt.Errorf("%w: %w: dovecot-auth %s: dial: %v", ErrUnavailable, ErrNoService, addr, err)
	}
	cn := newConn(lctx, nc, o, "dovecot-auth", log)
	cn.cancel = lcancel
	defer cn.close()
	if err := dovecotHandshake(cn); err != nil {
		return noService(err)
	}
	if err := cn.write([]byte("VERSION\t1\t2\nCPID\t" + strconv.Itoa(os.Getpid()) + "\n")); err != nil {
		return err
	}
	req := dovecotAuthRequest(service, c)
	if err := cn.writeSecret([]byte(req+"\tresp="+saslPlain(user, pass)+"\n"), req+"\tresp="); err != nil {
		return err
	}
	line, err := cn.readLine()
	if err != nil {
		return err
	}
	return parseDovecotAuthReply(trimCRLF(line), dovecotAuthID, addr)
}

// dovecotAuthRequest is the AUTH line up to resp=, all of it ours.
func dovecotAuthRequest(service string, c Client) string {
	var b strings.Builder
	b.WriteString("AUTH\t" + dovecotAuthID + "\tPLAIN\tservice=" + service)
	if c.Local.IsValid() {
		b.WriteString("\tlip=" + c.Local.Addr().Unmap().WithZone("").String() + "\tlport=" + strconv.Itoa(int(c.Local.Port())))
	}
	if c.Addr.IsValid() {
		b.WriteString("\trip=" + c.Addr.Addr().Unmap().WithZone("").String() + "\trport=" + strconv.Itoa(int(c.Addr.Port())))
	}
	if c.TLS != nil {
		b.WriteString("\tsecured")
	}
	if plainID(c.Session) {
		b.WriteString("\tsession=" + c.Session)
	}
	return b.String()
}

// plainID accepts 1 to 64 ASCII letters, digits, '-' and '_'.
func plainID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			return false
		}
	}
	return true
}

// dovecotHandshake reads the server's greeting up to DONE.
func dovecotHandshake(cn *conn) error {
	var h dovecotGreeting
	for range maxReplyLines {
		line, err := cn.readLine()
		if err != nil {
			return err
		}
		done, err := h.line(trimCRLF(line))
		if err != nil {
			return cn.unavailable(err.Error())
		}
		if done {
			return nil
		}
	}
	return cn.unavailable("handshake has too many lines")
}

// dovecotGreeting is the state of parsing the server's handshake.
type dovecotGreeting struct {
	version bool // VERSION 1.x seen (it must come first)
	plain   bool // MECH PLAIN offered
}

// line takes one handshake line (without its LF) and reports whether it
// was DONE. A wrong major version, a line before VERSION, a control
// byte, or DONE without PLAIN among the mechanisms is an error.
func (h *dovecotGreeting) line(line []byte) (done bool, err error) {
	if bytes.ContainsFunc(line, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
		return false, fmt.Errorf("control byte in handshake line %s", quote(line))
	}
	f := strings.Split(string(line), "\t")
	if !h.version {
		if len(f) != 3 || f[0] != "VERSION" || f[1] != "1" || !digits(f[2]) {
			return false, fmt.Errorf("not a Dovecot auth server version 1: %s", quote(line))
		}
		h.version = true
		return false, nil
	}
	switch f[0] {
	case "MECH":
		if len(f) < 2 || f[1] == "" {
			return false, fmt.Errorf("bad MECH line %s", quote(line))
		}
		if f[1] == "PLAIN" {
			h.plain = true
		}
	case "SPID", "CUID":
		if len(f) != 2 || !digits(f[1]) {
			return false, fmt.Errorf("bad %s line %s", f[0], quote(line))
		}
	case "COOKIE":
		if len(f) != 2 || f[1] == "" {
			return false, fmt.Errorf("bad COOKIE line %s", quote(line))
		}
	case "DONE":
		if len(f) != 1 {
			return false, fmt.Errorf("bad DONE line %s", quote(line))
		}
		if !h.plain {
			return false, errors.New("the auth service does not offer PLAIN (auth_mechanisms)")
		}
		return true, nil
	case "VERSION", "":
		return false, fmt.Errorf("unexpected handshake line %s", quote(line))
	default:
		// Later protocol minors may add lines; a client ignores them.
	}
	return false, nil
}

// parseDovecotAuthReply reads the answer to our AUTH with id: OK is a
// right password (unless it carries nologin: the user may not log in),
// FAIL with temp a backend problem, any other FAIL a refusal, anything
// else (CONT, another id, garbage) a protocol error.
func parseDovecotAuthReply(line []byte, id, addr string) error {
	bad := func() error {
		return fmt.Errorf("%w: dovecot-auth %s: unexpected reply %s", ErrUnavailable, addr, quote(line))
	}
	if bytes.ContainsFunc(line, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
		return bad()
	}
	f := strings.Split(string(line), "\t")
	if len(f) < 2 || f[1] != id {
		return bad()
	}
	params := f[2:]
	has := func(name string) bool {
		for _, p := range params {
			if p == name || strings.HasPrefix(p, name+"=") {
				return true
			}
		}
		return false
	}
	switch f[0] {
	case "OK":
		if has("nologin") {
			return fmt.Errorf("%w: dovecot-auth %s: OK with nologin", ErrAuthFailed, addr)
		}
		return nil
	case "FAIL":
		if has("temp") {
			return fmt.Errorf("%w: dovecot-auth %s: temporary failure %s", ErrUnavailable, addr, quote(line))
		}
		return fmt.Errorf("%w: dovecot-auth %s: %s", ErrAuthFailed, addr, quote(line))
	}
	return bad()
}

func digits(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
