package authlimit

import (
	"strings"
	"unicode/utf8"
)

// Check returns why a login name and password cannot be used, or "":
// empty, longer than MaxUsername or MaxPassword, invalid UTF-8 in the
// name, or CR, LF or NUL in either, which could inject a command into a
// backend. The proxy's logins and the nginx adapter log the same reasons.
func Check(user, pass string) string {
	if reason := CheckUser(user); reason != "" {
		return reason
	}
	switch {
	case pass == "":
		return "empty password"
	case len(pass) > MaxPassword || strings.ContainsAny(pass, "\r\n\x00"):
		return "invalid password"
	}
	return ""
}

// CheckUser is Check for a login name alone, for a caller that never
// sees the password (the Dovecot auth_policy adapter).
func CheckUser(user string) string {
	switch {
	case user == "":
		return "empty login name"
	case len(user) > MaxUsername:
		return "login name too long"
	case !utf8.ValidString(user) || strings.ContainsAny(user, "\r\n\x00"):
		return "invalid login name"
	}
	return ""
}
