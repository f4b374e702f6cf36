package backend

// The relay probe behind `mailgate check-config`: will the SMTP backend
// relay mail to another domain for a user mailgate logged in?
//
// In imap mode mailgate passes the login to Postfix as XCLIENT LOGIN=.
// Postfix counts that as authenticated for permit_sasl_authenticated only
// where SASL is switched on (smtpd_sasl_auth_enable = yes) on the service
// mailgate talks to; elsewhere the session is an unauthenticated client
// at the forwarded address, and once that address is outside mynetworks
// every message to another domain gets "554 5.7.1 Relay access denied".
// The probe asks the backend exactly that, without sending mail: greeting,
// EHLO (and STARTTLS), XCLIENT as for a login from a documentation
// address, EHLO, MAIL FROM:<>, RCPT TO an outside documentation domain,
// RSET, QUIT. It never says DATA.

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
)

// Relay probe parameters: addresses and names reserved for documentation
// (RFC 5737, RFC 2606), so the probe names nobody real and no mail could
// ever go anywhere.
const (
	probeClientAddr = "192.0.2.1"
	probeLogin      = "mailgate-relay-probe"
	probeRcpt       = "relay-probe@example.net"
)

// ProbeRelay asks the backend whether it would relay to another domain
// for a login as mailgate opens it in imap mode. It returns a warning
// (with the fix) when the backend refuses to relay, and an error when the
// probe could not run (backend unreachable, XCLIENT refused). Any other
// answer to RCPT is not a relay denial (Postfix checks
// smtpd_relay_restrictions before the recipient itself: a backend that
// cannot deliver to example.net still said whether it would relay) and
// gives "", nil. In smtp-auth mode the user's own AUTH
// decides at the backend and there is nothing to probe: "", nil.
func (b *SMTP) ProbeRelay(ctx context.Context) (string, error) {
	if b.Verify == VerifySMTPAuth {
		return "", nil
	}
	o := b.Opts.withDefaults()
	cn, err := dial(ctx, o, "smtp", o.Logger.With("backend", "smtp", "probe", "relay"), nil)
	if err != nil {
		return "", err
	}
	defer cn.close()
	s := &smtpSession{conn: cn}
	if _, err := s.greeting(); err != nil {
		return "", err
	}
	exts, err := s.ehloTLS(b.hostname())
	if err != nil {
		return "", err
	}
	if b.XCLIENT {
		c := Client{
			Addr:    netip.AddrPortFrom(netip.MustParseAddr(probeClientAddr), 49152),
			Session: "relay-probe",
			Helo:    b.hostname(),
			HeloCmd: "EHLO",
		}
		if err := s.xclient(c, exts, probeLogin, true); err != nil {
			return "", err
		}
		if _, err := s.ehlo(b.hostname()); err != nil {
			return "", err
		}
	}
	defer func() {
		for _, cmd := range []string{"RSET", "QUIT"} {
			if _, err := s.cmd(cmd); err != nil {
				return
			}
		}
	}()
	r, err := s.cmd("MAIL FROM:<>")
	if err != nil {
		return "", err
	}
	if r.code != 250 {
		return "", s.replyErr("MAIL FROM:<>", r)
	}
	if r, err = s.cmd("RCPT TO:<" + probeRcpt + ">"); err != nil {
		return "", err
	}
	text := strings.Join(r.lines, " ")
	if r.code < 500 || !(strings.Contains(text, "5.7.1") || strings.Contains(strings.ToLower(text), "relay access denied")) {
		return "", nil
	}
	got := fmt.Sprintf("RCPT TO:<%s> answered %d %s", probeRcpt, r.code, quote([]byte(text)))
	if b.XCLIENT {
		return fmt.Sprintf("%s will not relay to other domains for a user mailgate logged in (XCLIENT ADDR=%s LOGIN=%s, then %s): "+
			"Postfix counts XCLIENT LOGIN= as authenticated only where SASL is on; on the service mailgate uses set "+
			"smtpd_sasl_auth_enable=yes with a SASL backend (smtpd_sasl_type=dovecot, smtpd_sasl_path=private/auth) "+
			"and keep permit_sasl_authenticated in smtpd_relay_restrictions (docs/backends.md, \"Postfix settings\")",
			o.Address, probeClientAddr, probeLogin, got), nil
	}
	return fmt.Sprintf("%s will not relay to other domains for mailgate's own address (%s): "+
		"add mailgate's address to mynetworks on that service, or use xclient: true with smtpd_sasl_auth_enable=yes "+
		"(docs/backends.md, \"Postfix settings\")", o.Address, got), nil
}
