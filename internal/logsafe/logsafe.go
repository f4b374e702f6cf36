// Package logsafe escapes client text for mailgate's log fields. The
// proxy and the HTTP adapters log user names with it, so a fail2ban filter
// reads every AUTHFAILED line the same, whoever wrote it. It imports only
// the standard library.
package logsafe

import "unicode/utf8"

// Field makes client text safe and short for a log field. Printable
// ASCII stays as it is, so a name stays recognisable; every other rune is
// escaped as Go writes it (\u00a0, \U0001f600), invalid UTF-8 as \xff and
// the backslash as \\. So no Unicode space, line or paragraph separator,
// control or format character reaches a log line, where a syslog daemon,
// journald or a fail2ban regex (Python's \s and \S know Unicode) would
// read it differently from us. The result is at most max octets and never
// ends inside an escape.
func Field(s string, max int) string {
	clean := len(s) <= max
	for i := 0; clean && i < len(s); i++ {
		clean = s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\'
	}
	if clean {
		return s
	}
	const hex = "0123456789abcdef"
	b := make([]byte, 0, min(max, 2*len(s)))
	var esc [10]byte
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		var p []byte
		switch {
		case r == utf8.RuneError && n == 1:
			p = append(esc[:0], '\\', 'x', hex[s[i]>>4], hex[s[i]&15])
		case r == '\\':
			p = append(esc[:0], '\\', '\\')
		case r >= 0x20 && r < 0x7f:
			p = append(esc[:0], byte(r))
		case r <= 0xffff:
			p = append(esc[:0], '\\', 'u')
			for sh := 12; sh >= 0; sh -= 4 {
				p = append(p, hex[r>>sh&15])
			}
		default:
			p = append(esc[:0], '\\', 'U')
			for sh := 28; sh >= 0; sh -= 4 {
				p = append(p, hex[r>>sh&15])
			}
		}
		if len(b)+len(p) > max {
			break
		}
		b = append(b, p...)
		i += n
	}
	return string(b)
}
