package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/guard"
)

// TestUnlockConsoleAccount: a locked console account is listed with
// "console", ?console= unlocks it, and ?user= never reaches its key
// (neither as console:NAME nor with the NUL of the key itself).
func TestUnlockConsoleAccount(t *testing.T) {
	g := newGuard(t, func(c *guard.Config) { c.Tarpit.After = 0 })
	for i := range guard.Defaults().Lockout.After {
		a := g.Attempt(guard.ConsoleLogin("root"), netip.AddrFrom4([4]byte{10, 0, byte(i), 1}), fmt.Sprint("pw", i))
		a.Begin(context.Background())
		a.Finish(guard.WrongPassword, "")
	}
	srv := newGuardServer(t, g, testToken)
	do := func(method, path string) ([]byte, error) {
		return Request(t.Context(), srv.URL, testToken, method, GuardPrefix+path, nil)
	}
	out, err := do("GET", "/lockouts")
	var ls []guard.Lockout
	if err != nil || json.Unmarshal(out, &ls) != nil || len(ls) != 1 || ls[0].Console != "root" {
		t.Fatalf("GET /lockouts = %s, %v", out, err)
	}
	if _, err := do("POST", "/unlock?user=console:root"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("?user=console:root: %v, want 404", err)
	}
	if _, err := do("POST", "/unlock?user=%00console%00root"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("?user= with a NUL: %v, want 400", err)
	}
	if _, err := do("POST", "/unlock?console=bad%20name"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("?console= with a bad name: %v, want 400", err)
	}
	if out, err := do("POST", "/unlock?console=root"); err != nil || !strings.Contains(string(out), `"unlocked_console":"root"`) {
		t.Errorf("?console=root: %s, %v", out, err)
	}
	if len(g.Lockouts()) != 0 {
		t.Error("console account still locked")
	}
}
