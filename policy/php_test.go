package policy

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// phpDecide is the original auth script's rule, transcribed: strip " ",
// "\t", "\r", "\0" from each line, split on "|", allow when the left side
// equals the login and the right side equals the country code or the IP;
// otherwise allow iff the country is in the default list.
func phpDecide(file, login, ip, cc string, defaults []string) bool {
	for _, line := range strings.Split(file, "\n") {
		line = strings.NewReplacer(" ", "", "\t", "", "\r", "", "\x00", "").Replace(line)
		u, c, ok := strings.Cut(line, "|")
		if ok && u == login && (c == cc || c == ip) {
			return true
		}
	}
	for _, d := range defaults {
		if d == cc {
			return true
		}
	}
	return false
}

// TestMatchesPHPScript compares the engine with phpDecide on generated
// files in the old format: the users, codes and noise the script
// tolerated, plus malformed lines. Inputs stay inside what both read the
// same way (exact-case names and codes, one "|" per line, IPv4 written
// canonically); the documented differences are tested elsewhere.
func TestMatchesPHPScript(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	users := []string{"alice", "bob", "carol@example.com"}
	rights := []string{"RU", "GB", "IN", "US", "DE", "192.0.2.30", "192.0.2.31", "81.2.69.142"}
	addrs := []string{"192.0.2.30", "192.0.2.31", "81.2.69.142", "203.0.113.10", "198.51.100.20", "2001:db8::1"}
	noise := func(s string) string {
		var b strings.Builder
		for _, c := range s {
			if r.IntN(4) == 0 {
				b.WriteByte(" \t\r\x00"[r.IntN(4)])
			}
			b.WriteRune(c)
		}
		return b.String()
	}
	defaults := []string{"IN", "US"}
	for i := range 500 {
		var f strings.Builder
		if r.IntN(2) == 0 {
			f.WriteString("<?php exit; ?>\n")
		}
		for range r.IntN(8) {
			u, c := users[r.IntN(len(users))], rights[r.IntN(len(rights))]
			switch r.IntN(6) {
			case 0:
				f.WriteString(noise(u + c)) // no "|"
			case 1:
				f.WriteString(noise("|" + c))
			case 2:
				f.WriteString(noise(u + "|"))
			default:
				f.WriteString(noise(u + "|" + c))
			}
			f.WriteString([]string{"\n", "\r\n"}[r.IntN(2)])
		}
		file := f.String()
		e, _ := setup(t, Config{AllowCountries: defaults}, file+"\n", "")
		for _, login := range users {
			for _, a := range addrs {
				cc := testGeo.Lookup(ip(a)).Code()
				want := phpDecide(file, login, a, cc, defaults)
				if d := e.Decide(Request{Login: login, Protocol: IMAP, Addr: ip(a)}); d.Allow != want {
					t.Fatalf("file %d %q: %s from %s (%s): engine %v by %s, PHP %v", i, file, login, a, cc, d.Allow, d.Rule, want)
				}
			}
		}
	}
}
