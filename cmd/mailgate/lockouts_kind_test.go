package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/guard"
)

// TestLockoutsCommandNeverConfusesMailAndConsole: `mailgate lockouts`
// prints a mail login quoted, so a locked mail login spelled "console
// account ops" never prints as the console account ops, and one with a
// tab or newline cannot break the table; `mailgate unlock` quotes it too.
func TestLockoutsCommandNeverConfusesMailAndConsole(t *testing.T) {
	e := startGuardEnv(t)
	g := e.g.guard.g
	lock := func(key string, net byte) {
		for i := 0; i < 200; i++ {
			for _, l := range g.Lockouts() {
				if l.Login == key {
					return
				}
			}
			a := g.Attempt(key, netip.AddrFrom4([4]byte{10, net, byte(i), 1}), fmt.Sprint("guess-", i))
			a.Begin(context.Background())
			a.Finish(guard.WrongPassword, "")
		}
		t.Fatalf("%q not locked: %+v", key, g.Lockouts())
	}
	lock(guard.ConsoleLogin("ops"), 7)
	lock("console account ops", 8)
	lock("tab\there\nnext", 9)

	code, out := e.cli(t, "lockouts")
	if code != 0 {
		t.Fatalf("lockouts: %d %q", code, out)
	}
	var console, mail, odd int
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "console account ops "):
			console++
		case strings.HasPrefix(l, `"console account ops" `):
			mail++
		case strings.HasPrefix(l, `"tab\there\nnext" `):
			odd++
		}
	}
	if console != 1 || mail != 1 || odd != 1 {
		t.Errorf("lockouts: %d console, %d quoted mail, %d quoted odd rows, want 1 each:\n%s", console, mail, odd, out)
	}
	if code, out := e.cli(t, "unlock", "console account ops"); code != 0 || !strings.Contains(out, `"console account ops" unlocked`) {
		t.Errorf("unlock of the mail login: %d %q", code, out)
	}
	if n := len(g.Lockouts()); n != 2 {
		t.Errorf("%d lockouts after unlocking the mail login, want 2 (the console account's kept)", n)
	}
}
