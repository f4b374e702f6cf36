package backend

// xtext encodes s as RFC 3461 4 xtext: printable ASCII ("!" to "~")
// except "+" and "=" stands for itself; every other octet becomes "+"
// and two upper-case hex digits. Postfix decodes every XCLIENT attribute
// value this way (XCLIENT_README), so a user name or EHLO name can never
// add an attribute or end the command line.
func xtext(s string) string {
	const hex = "0123456789ABCDEF"
	n := 0
	for i := 0; i < len(s); i++ {
		if !xtextPlain(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	out := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		b := s[i]
		if xtextPlain(b) {
			out = append(out, b)
			continue
		}
		out = append(out, '+', hex[b>>4], hex[b&0xf])
	}
	return string(out)
}

// xtextPlain reports whether b stands for itself in xtext.
func xtextPlain(b byte) bool {
	return b >= '!' && b <= '~' && b != '+' && b != '='
}
