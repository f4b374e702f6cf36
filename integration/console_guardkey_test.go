//go:build integration

package integration

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestConsoleAccountNotLockedByMailLogins: IMAPS clients that log in as
// "console:root" through the real proxy, with wrong passwords from
// enough addresses to lock that login (lockout.after 3 here), lock the
// mail login only: the console account root still signs in from an
// address that never succeeded before, and the LOCKED line names the
// mail login, not a console account.
func TestConsoleAccountNotLockedByMailLogins(t *testing.T) {
	m, base, imaps := consoleMailgateGuard(t, "{tarpit: {after: 0}, failure_penalty: {init: 50ms, max: 200ms}, lockout: {after: 3, per_ip_after: 2}}")
	// GB addresses (127.0.0.16/28) no other test logs in from.
	for i, src := range []string{"127.0.0.27", "127.0.0.28", "127.0.0.30"} {
		out, err := python(t, imaplibAudit, src, itoa(imaps), "console:"+consoleAdmin, fmt.Sprintf("mail-guess-%d", i))
		if err != nil {
			t.Fatalf("imaplib from %s: %v\n%s", src, err, out)
		}
	}
	if !waitFor(func() bool { return hasLine(m.Log(), "msg=LOCKED", "user=console:"+consoleAdmin) }, eventually) {
		t.Fatalf("the mail login console:%s was not locked:\n%s", consoleAdmin, m.Log())
	}
	if hasLine(m.Log(), "msg=LOCKED", "console_user=") {
		t.Errorf("a console account was locked by mail logins:\n%s", m.Log())
	}

	// The admin signs in from 127.0.0.31, where nobody succeeded before.
	cl := &http.Client{
		Timeout:       30 * time.Second,
		Transport:     &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.31")}}).DialContext},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, _ := http.NewRequestWithContext(t.Context(), "POST", base+"/console/login",
		strings.NewReader(url.Values{"user": {consoleAdmin}, "password": {consoleAdminPW}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	r, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusSeeOther {
		t.Errorf("console sign-in of %s after mail logins as console:%s failed: %d, want 303\n%s", consoleAdmin, consoleAdmin, r.StatusCode, m.Log())
	}
}
