package nginx

import (
	"net/http"
	"net/url"
	"testing"
)

// FuzzParseRequest: any header values nginx (or anything holding the
// secret) sends are parsed without panic, and what is accepted is within
// the protocol: a known protocol and method, an IP address without zone,
// an attempt from 1 to maxLoginAttempt, credentials exactly unescaped.
// Seeds: testdata/fuzz/FuzzParseRequest.
func FuzzParseRequest(f *testing.F) {
	f.Add("plain", "alice%40example.test", "pa%20ss+word", "imap", "1", "192.0.2.42")
	f.Fuzz(func(t *testing.T, method, user, pass, proto, attempt, ip string) {
		h := http.Header{}
		for k, v := range map[string]string{"Auth-Method": method, "Auth-User": user, "Auth-Pass": pass,
			"Auth-Protocol": proto, "Auth-Login-Attempt": attempt, "Client-IP": ip} {
			if v != "" {
				h.Set(k, v)
			}
		}
		r, err := parseRequest(h)
		if err != nil {
			return
		}
		switch {
		case r.proto != "imap" && r.proto != "pop3" && r.proto != "smtp":
			t.Fatalf("protocol %q accepted", r.proto)
		case r.method != "plain" && r.method != "login":
			t.Fatalf("method %q accepted", r.method)
		case !r.clientIP.IsValid() || r.clientIP.Zone() != "" || r.clientIP.Is4In6():
			t.Fatalf("client address %v accepted", r.clientIP)
		case r.attempt < 1 || r.attempt > maxLoginAttempt:
			t.Fatalf("attempt %d accepted", r.attempt)
		}
		if u, _ := url.PathUnescape(user); u != r.user {
			t.Fatalf("user %q parsed as %q", user, r.user)
		}
		if p, _ := url.PathUnescape(pass); p != r.pass {
			t.Fatalf("password parsed wrongly")
		}
	})
}
