package guard

import (
	"log/slog"
	"strings"
)

// consoleMark starts the key under which the guard counts a web console
// account. Mail logins never hold a NUL (internal/authlimit refuses them
// before any attempt is begun, in the proxy and in both adapters), so no
// mail login can count towards a console account's lockout, nor a
// console sign-in towards a mail login's: the two never share a key,
// while bans, the tarpit and the one Unlock still cover both.
const consoleMark = "\x00console\x00"

// ConsoleLogin is the guard key of console account name: what the
// console passes to Attempt, and Unlock takes to unlock the account.
func ConsoleLogin(name string) string { return consoleMark + name }

// ConsoleAccount returns the console account of a guard key and true,
// or "" and false for a mail login.
func ConsoleAccount(login string) (string, bool) {
	if name, ok := strings.CutPrefix(login, consoleMark); ok {
		return name, true
	}
	return "", false
}

// loginAttr is the log attribute of a guard key: "user" for a mail
// login, "console_user" for a console account, so a console lockout
// never reads as a mail login's.
func loginAttr(login string) slog.Attr {
	if name, ok := ConsoleAccount(login); ok {
		return slog.String("console_user", name)
	}
	return slog.String("user", login)
}
