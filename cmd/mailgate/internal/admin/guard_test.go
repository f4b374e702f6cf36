package admin

import (
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/guard"
)

const testToken = "s3cret-admin-token"

// newGuard is a real guard with default settings changed by mod.
func newGuard(t *testing.T, mod func(*guard.Config)) *guard.Guard {
	t.Helper()
	c := guard.Defaults()
	if mod != nil {
		mod(&c)
	}
	g, err := guard.New(c, guard.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// newGuardServer serves g's API on the admin handler on a loopback port.
func newGuardServer(t *testing.T, g *guard.Guard, token string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(New(Config{Token: token, Guard: g, Reload: func() error { return nil }}).Handler())
	t.Cleanup(srv.Close)
	return srv
}

func TestGuardAPI(t *testing.T) {
	g := newGuard(t, func(c *guard.Config) { c.TrustedNetworks = []string{"203.0.113.0/24"} })
	srv := newGuardServer(t, g, testToken)
	ctx := t.Context()
	do := func(method, path string, body any) ([]byte, error) {
		return Request(ctx, srv.URL, testToken, method, GuardPrefix+path, body)
	}

	out, err := do("GET", "/bans", nil)
	if err != nil || strings.TrimSpace(string(out)) != "[]" {
		t.Fatalf("GET /bans on an empty guard = %q, %v; want []", out, err)
	}
	out, err = do("POST", "/bans", BanRequest{Prefix: "198.51.100.0/24", Duration: "2h", Reason: "scanner"})
	if err != nil {
		t.Fatalf("POST /bans: %v", err)
	}
	var b guard.Ban
	if err := json.Unmarshal(out, &b); err != nil || b.Prefix.String() != "198.51.100.0/24" || !b.Manual || b.Reason != "scanner" {
		t.Fatalf("POST /bans returned %s (%v)", out, err)
	}
	if bans := g.Bans(); len(bans) != 1 || bans[0].Prefix != b.Prefix {
		t.Fatalf("ban added over the API is not the guard's: %+v", bans)
	}
	if _, err := do("POST", "/bans", BanRequest{Prefix: "192.0.2.9", Duration: "30m"}); err != nil {
		t.Fatalf("POST /bans with a bare address: %v", err)
	}
	out, _ = do("GET", "/bans", nil)
	var bans []guard.Ban
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
	if bans := g.Bans(); len(bans) != 1 {
		t.Fatalf("bans after DELETE = %+v, want the other one", bans)
	}

	// A lockout, as the guard's state file brings it back after a
	// restart.
	state := filepath.Join(t.TempDir(), "guard.json")
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	os.WriteFile(state, []byte(`{"version":1,"lockouts":[{"login":"alice@example.org","until":"`+until+`","reason":"test"}]}`), 0o600)
	if err := g.Load(state); err != nil {
		t.Fatal(err)
	}
	out, err = do("GET", "/lockouts", nil)
	var locks []guard.Lockout
	if err != nil || json.Unmarshal(out, &locks) != nil || len(locks) != 1 || locks[0].Login != "alice@example.org" {
		t.Fatalf("GET /lockouts = %s, %v", out, err)
	}
	out, err = do("POST", "/unlock?user=Alice@Example.org", nil)
	if err != nil || !strings.Contains(string(out), `"unlocked":"alice@example.org"`) {
		t.Fatalf("POST /unlock: %s, %v", out, err)
	}
	if _, err := do("POST", "/unlock?user=alice@example.org", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("second unlock = %v, want 404", err)
	}
	if _, err := do("POST", "/unlock", nil); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("unlock without user = %v, want 400", err)
	}
	if _, err := do("POST", "/unlock?user="+strings.Repeat("a", maxUser+1), nil); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("unlock with an overlong user = %v, want 400", err)
	}
	if _, err := do("GET", "/nothing", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("GET /nothing = %v, want 404", err)
	}
}

func TestGuardAPIBodyTooLarge(t *testing.T) {
	srv := newGuardServer(t, newGuard(t, nil), testToken)
	big := BanRequest{Prefix: "10.0.0.0/8", Duration: "1h", Reason: strings.Repeat("x", maxBody)}
	if _, err := Request(t.Context(), srv.URL, testToken, "POST", GuardPrefix+"/bans", big); err == nil || !strings.Contains(err.Error(), "413") {
		t.Fatalf("oversized body = %v, want 413", err)
	}
}

func TestRequestUnixSocket(t *testing.T) {
	g := newGuard(t, nil)
	sock := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Skipf("unix sockets unavailable: %v", err)
	}
	srv := &http.Server{Handler: New(Config{Token: testToken, Guard: g}).Handler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	if _, err := Request(t.Context(), "unix:"+sock, testToken, "POST", GuardPrefix+"/bans", BanRequest{Prefix: "192.0.2.0/24", Duration: "1h"}); err != nil {
		t.Fatalf("POST over a unix socket: %v", err)
	}
	if len(g.Bans()) != 1 {
		t.Fatal("ban over the unix socket not added")
	}
	if _, err := Request(t.Context(), "unix:"+sock, "bad", "GET", GuardPrefix+"/bans", nil); err == nil || !strings.Contains(err.Error(), "401") {
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
		if d <= 0 || d > maxBan {
			t.Fatalf("accepted duration %v", d)
		}
		if reason == "" || len(reason) > maxReason || strings.ContainsAny(reason, "\r\n\x00") {
			t.Fatalf("accepted reason %q", reason)
		}
	})
}
