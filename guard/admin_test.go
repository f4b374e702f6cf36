package guard

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testToken = "s3cret-admin-token"

// newAdminServer serves g's admin API on a loopback port.
func newAdminServer(t *testing.T, g *Guard, token string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(g.AdminHandler(token))
	t.Cleanup(srv.Close)
	return srv
}

func TestAdminAuth(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	for _, tc := range []struct {
		name, serverToken, header string
	}{
		{"no header", testToken, ""},
		{"wrong token", testToken, "Bearer wrong"},
		{"token prefix", testToken, "Bearer " + testToken[:5]},
		{"token with suffix", testToken, "Bearer " + testToken + "x"},
		{"basic scheme", testToken, "Basic " + testToken},
		{"empty server token", "", "Bearer "},
	} {
		srv := newAdminServer(t, g, tc.serverToken)
		for _, ep := range []struct{ method, path string }{
			{"GET", "/bans"}, {"POST", "/bans"}, {"DELETE", "/bans?prefix=192.0.2.1"},
			{"GET", "/lockouts"}, {"POST", "/unlock?user=alice"},
		} {
			req, _ := http.NewRequest(ep.method, srv.URL+ep.path, strings.NewReader(`{"prefix":"192.0.2.1","duration":"1h"}`))
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s: %s %s = %d, want 401", tc.name, ep.method, ep.path, resp.StatusCode)
			}
		}
	}
	if b := g.Bans(); len(b) != 0 {
		t.Fatalf("unauthorized requests added bans: %+v", b)
	}
}

func TestAdminAPI(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.TrustedNetworks = []string{"203.0.113.0/24"} })
	srv := newAdminServer(t, g, testToken)
	ctx := t.Context()
	do := func(method, path string, body any) ([]byte, error) {
		return AdminRequest(ctx, srv.URL, testToken, method, path, body)
	}

	out, err := do("GET", "/bans", nil)
	if err != nil || strings.TrimSpace(string(out)) != "[]" {
		t.Fatalf("GET /bans on an empty guard = %q, %v; want []", out, err)
	}
	out, err = do("POST", "/bans", BanRequest{Prefix: "198.51.100.0/24", Duration: "2h", Reason: "scanner"})
	if err != nil {
		t.Fatalf("POST /bans: %v", err)
	}
	var b Ban
	if err := json.Unmarshal(out, &b); err != nil || b.Prefix.String() != "198.51.100.0/24" || !b.Manual || b.Reason != "scanner" {
		t.Fatalf("POST /bans returned %s (%v)", out, err)
	}
	if _, err := g.Accept(netip.MustParseAddr("198.51.100.7")); err == nil {
		t.Fatal("ban added over the API is not enforced")
	}
	if _, err := do("POST", "/bans", BanRequest{Prefix: "192.0.2.9", Duration: "30m"}); err != nil {
		t.Fatalf("POST /bans with a bare address: %v", err)
	}
	out, _ = do("GET", "/bans", nil)
	var bans []Ban
	if err := json.Unmarshal(out, &bans); err != nil || len(bans) != 2 || bans[0].Prefix.String() != "192.0.2.9/32" || bans[0].Reason != "admin" {
		t.Fatalf("GET /bans = %s, want two bans, soonest first, default reason admin", out)
	}

	for _, bad := range []struct {
		body any
		want string
	}{
		{BanRequest{Prefix: "nonsense", Duration: "1h"}, "400"},
		{BanRequest{Prefix: "10.0.0.0/8", Duration: "-1h"}, "400"},
		{BanRequest{Prefix: "10.0.0.0/8", Duration: "9000h"}, "400"},
		{BanRequest{Prefix: "10.0.0.0/8", Duration: "1h", Reason: "x\ninjected"}, "400"},
		{map[string]string{"prefix": "10.0.0.0/8", "duration": "1h", "extra": "x"}, "400"},
		{BanRequest{Prefix: "203.0.113.0/24", Duration: "1h"}, "409"},
	} {
		if _, err := do("POST", "/bans", bad.body); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("POST /bans %+v = %v, want HTTP %s", bad.body, err, bad.want)
		}
	}

	if _, err := do("DELETE", "/bans?prefix=198.51.100.0/24", nil); err != nil {
		t.Fatalf("DELETE /bans: %v", err)
	}
	if _, err := do("DELETE", "/bans?prefix=198.51.100.0/24", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("second DELETE = %v, want 404", err)
	}
	if c, err := g.Accept(netip.MustParseAddr("198.51.100.7")); err != nil {
		t.Fatalf("Accept after the ban was removed: %v", err)
	} else {
		c.Close()
	}

	for i := range 10 {
		g.Attempt("alice@example.org", netip.AddrFrom4([4]byte{10, byte(i), 0, 1}), fmt.Sprint("g", i)).Finish(WrongPassword, "")
	}
	out, err = do("GET", "/lockouts", nil)
	var locks []Lockout
	if err != nil || json.Unmarshal(out, &locks) != nil || len(locks) != 1 || locks[0].Login != "alice@example.org" {
		t.Fatalf("GET /lockouts = %s, %v", out, err)
	}
	if _, err := do("POST", "/unlock?user=Alice@Example.org", nil); err != nil {
		t.Fatalf("POST /unlock: %v", err)
	}
	if _, err := do("POST", "/unlock?user=alice@example.org", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("second unlock = %v, want 404", err)
	}
	if _, err := do("POST", "/unlock", nil); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("unlock without user = %v, want 400", err)
	}
	if _, err := do("GET", "/nothing", nil); err == nil {
		t.Fatal("GET /nothing succeeded")
	}
}

func TestAdminBodyTooLarge(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	srv := newAdminServer(t, g, testToken)
	big := BanRequest{Prefix: "10.0.0.0/8", Duration: "1h", Reason: strings.Repeat("x", maxAdminBody)}
	if _, err := AdminRequest(t.Context(), srv.URL, testToken, "POST", "/bans", big); err == nil || !strings.Contains(err.Error(), "413") {
		t.Fatalf("oversized body = %v, want 413", err)
	}
}

func TestAdminUnixSocket(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	sock := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Skipf("unix sockets unavailable: %v", err)
	}
	srv := &http.Server{Handler: g.AdminHandler(testToken), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	if _, err := AdminRequest(t.Context(), "unix:"+sock, testToken, "POST", "/bans", BanRequest{Prefix: "192.0.2.0/24", Duration: "1h"}); err != nil {
		t.Fatalf("POST over a unix socket: %v", err)
	}
	if len(g.Bans()) != 1 {
		t.Fatal("ban over the unix socket not added")
	}
	if _, err := AdminRequest(t.Context(), "unix:"+sock, "bad", "GET", "/bans", nil); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("bad token over the unix socket = %v, want 401", err)
	}
}

// FuzzBanRequest checks the POST /bans body parser: no panic, and what
// it accepts is a masked prefix, a bounded positive duration and a
// printable, bounded reason.
func FuzzBanRequest(f *testing.F) {
	f.Add([]byte(`{"prefix":"192.0.2.0/24","duration":"1h","reason":"x"}`))
	f.Add([]byte(`{"prefix":"2001:db8::1","duration":"90m"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, d, reason, err := parseBanRequest(data)
		if err != nil {
			return
		}
		if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("accepted prefix %v", p)
		}
		if d <= 0 || d > maxAdminBan {
			t.Fatalf("accepted duration %v", d)
		}
		if reason == "" || len(reason) > maxReason || strings.ContainsAny(reason, "\r\n\x00") {
			t.Fatalf("accepted reason %q", reason)
		}
	})
}
