package authlimit

import (
	"encoding/base64"
	"testing"
)

// The longest PLAIN message (authzid NUL user NUL password), base64, in
// the longest SASL command ("a AUTHENTICATE PLAIN " and CRLF, or SMTP's
// "AUTH PLAIN "), fits one SASL line.
func TestPlainFitsSASLLine(t *testing.T) {
	plain := MaxUsername + 1 + MaxUsername + 1 + MaxPassword
	line := len("a AUTHENTICATE PLAIN ") + base64.StdEncoding.EncodedLen(plain) + len("\r\n")
	if line > MaxSASLLine {
		t.Errorf("a PLAIN line of %d octets does not fit MaxSASLLine %d", line, MaxSASLLine)
	}
}
