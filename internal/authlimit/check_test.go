package authlimit

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tt := range []struct{ user, pass, want string }{
		{"alice", "pw", ""},
		{"", "pw", "empty login name"},
		{strings.Repeat("a", MaxUsername+1), "pw", "login name too long"},
		{"a\xff", "pw", "invalid login name"},
		{"a\nb", "pw", "invalid login name"},
		{"alice", "", "empty password"},
		{"alice", "p\x00w", "invalid password"},
		{"alice", strings.Repeat("p", MaxPassword+1), "invalid password"},
	} {
		if got := Check(tt.user, tt.pass); got != tt.want {
			t.Errorf("Check(%q, %q) = %q, want %q", tt.user, tt.pass, got, tt.want)
		}
	}
}

// CheckUser refuses what Check refuses for the name, and nothing more.
func TestCheckUser(t *testing.T) {
	for _, user := range []string{"alice", "", strings.Repeat("a", MaxUsername), strings.Repeat("a", MaxUsername+1), "a\xff", "a\nb", "a\x00"} {
		want := Check(user, "pw")
		if got := CheckUser(user); got != want {
			t.Errorf("CheckUser(%q) = %q, Check says %q", user, got, want)
		}
	}
}
