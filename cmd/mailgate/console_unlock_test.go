package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/guard"
)

// TestUnlockConsoleAccountCommand: `mailgate lockouts` names a locked
// console account as one, `mailgate unlock console:NAME` does not touch
// it (that is a mail login), and `mailgate unlock -console NAME` does.
func TestUnlockConsoleAccountCommand(t *testing.T) {
	e := startGuardEnv(t)
	g := e.g.guard.g
	for i := 0; i < 200 && len(g.Lockouts()) == 0; i++ {
		a := g.Attempt(guard.ConsoleLogin("ops"), netip.AddrFrom4([4]byte{10, 7, byte(i), 1}), fmt.Sprint("guess-", i))
		a.Begin(context.Background())
		a.Finish(guard.WrongPassword, "")
	}
	if len(g.Lockouts()) != 1 {
		t.Fatalf("lockouts %+v", g.Lockouts())
	}
	if code, out := e.cli(t, "lockouts"); code != 0 || !strings.Contains(out, "console account ops") {
		t.Errorf("lockouts: %d %q", code, out)
	}
	if code, out := e.cli(t, "unlock", "console:ops"); code != 1 || !strings.Contains(out, "not locked") {
		t.Errorf("unlock console:ops (a mail login): %d %q", code, out)
	}
	if code, out := e.cli(t, "unlock", "-console", "ops"); code != 0 || !strings.Contains(out, "console account ops unlocked") {
		t.Errorf("unlock -console ops: %d %q", code, out)
	}
	if n := len(g.Lockouts()); n != 0 {
		t.Errorf("%d lockouts after unlock -console", n)
	}
}
