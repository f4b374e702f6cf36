package nginx

// The auth_http request as nginx's mail module sends it
// (nginx.org/en/docs/mail/ngx_mail_auth_http_module.html, "Protocol"):
// GET with the facts in headers, Auth-User and Auth-Pass URL-escaped
// (nginx 1.5.6 and later). parseRequest is the one parser of those
// headers; it is fuzzed (FuzzParseRequest).

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/mailgate/mailgate/policy"
)

// maxLoginAttempt bounds Auth-Login-Attempt; nginx counts the attempts
// of one session, which its own limits keep far below this.
const maxLoginAttempt = 1000

// errUnsupportedMethod: a method that carries no password mailgate can
// check (apop, cram-md5, external, none). It is refused, never judged.
var errUnsupportedMethod = errors.New("auth method carries no plain password")

// request is one parsed auth_http request.
type request struct {
	method   string // "plain" or "login", as nginx names them
	proto    policy.Protocol
	user     string // unescaped, unchecked: judge checks it
	pass     string // unescaped, never logged
	attempt  int    // Auth-Login-Attempt, 1 for the session's first
	clientIP netip.Addr
}

// parseRequest reads the headers nginx sends. An error wrapping
// errUnsupportedMethod names a method nginx was configured to offer but
// mailgate cannot verify; any other error is a request nginx would not
// send (a bad Client-IP, an unknown protocol), answered 400 and not
// judged. Credentials are only unescaped here: empty, too long or
// control-laden ones are the login's to refuse, as in the proxy.
func parseRequest(h http.Header) (request, error) {
	var r request
	one := func(name string) (string, error) {
		v := h.Values(name)
		switch len(v) {
		case 0:
			return "", nil
		case 1:
			return v[0], nil
		}
		return "", fmt.Errorf("%s sent %d times", name, len(v))
	}
	proto, err := one("Auth-Protocol")
	if err != nil {
		return r, err
	}
	switch proto {
	case "imap", "pop3", "smtp":
		r.proto = policy.Protocol(proto)
	default:
		return r, fmt.Errorf("Auth-Protocol %q is not imap, pop3 or smtp", clip(proto))
	}
	ip, err := one("Client-IP")
	if err != nil {
		return r, err
	}
	if r.clientIP, err = netip.ParseAddr(ip); err != nil || r.clientIP.Zone() != "" {
		return r, fmt.Errorf("Client-IP %q is not an IP address", clip(ip))
	}
	r.clientIP = r.clientIP.Unmap()
	attempt, err := one("Auth-Login-Attempt")
	if err != nil {
		return r, err
	}
	r.attempt = 1
	if attempt != "" {
		n, err := strconv.Atoi(attempt)
		if err != nil || n < 1 || n > maxLoginAttempt {
			return r, fmt.Errorf("Auth-Login-Attempt %q is not a number from 1 to %d", clip(attempt), maxLoginAttempt)
		}
		r.attempt = n
	}
	method, err := one("Auth-Method")
	if err != nil {
		return r, err
	}
	switch method {
	case "plain", "login":
		r.method = method
	default:
		return r, fmt.Errorf("%w: Auth-Method %q", errUnsupportedMethod, clip(method))
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"Auth-User", &r.user}, {"Auth-Pass", &r.pass}} {
		v, err := one(f.name)
		if err != nil {
			return r, err
		}
		// PathUnescape, not QueryUnescape: nginx escapes a space as %20
		// and leaves '+' as it is, so a '+' in a password is a '+'.
		if *f.dst, err = url.PathUnescape(v); err != nil {
			return r, fmt.Errorf("%s is not URL-escaped as nginx 1.5.6 and later send it", f.name)
		}
	}
	return r, nil
}

// mech is the mechanism name for logs, metrics and the audit, in the
// proxy's words: PLAIN (nginx's "plain": IMAP LOGIN, POP3 USER/PASS and
// SASL PLAIN) or LOGIN (SASL LOGIN).
func (r request) mech() string { return strings.ToUpper(r.method) }

// clip bounds a header value quoted in a log line.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
