package smtpwire

import (
	"strings"

	"golang.org/x/net/idna"
)

// heloIDNA turns a non-ASCII EHLO name into A-labels (RFC 5890 2.3.2.1,
// Punycode): the lookup mapping (case folding, NFC) and validation of
// IDNA2008 with the Bidi rule, so invisible, format and direction
// control characters are refused; not the STD3 rules, since clients name
// themselves with underscores (Windows computer names).
var heloIDNA = idna.New(idna.MapForLookup(), idna.Transitional(false), idna.StrictDomainName(false), idna.BidiRule())

// HeloASCII returns the EHLO/HELO name (as ParseHelo returned it) in the
// form the backend gets it: an ASCII name as it is; a name with other
// characters (an internationalized domain, or a computer name in the
// user's script) as IDNA A-labels, as RFC 6531 3.7.1 asks of an EHLO
// domain. The result is 1 to 255 octets of visible ASCII; a name that
// cannot be made so (invalid IDNA, too long) is a *SyntaxError, for a 501
// at EHLO time (RFC 5321 4.1.1.1): never a refusal by the backend after
// the login decision.
func HeloASCII(name string) (string, error) {
	if _, err := ParseHelo(name); err != nil {
		return "", err
	}
	if !isASCII(name) {
		a, err := heloIDNA.ToASCII(name)
		if err != nil {
			return "", &SyntaxError{Code: 501, Msg: "domain is not a valid internationalized name"}
		}
		name = a
	}
	if name == "" || len(name) > maxDomain {
		return "", &SyntaxError{Code: 501, Msg: "domain too long as A-labels"}
	}
	for i := 0; i < len(name); i++ {
		if name[i] <= ' ' || name[i] >= 0x7f {
			return "", &SyntaxError{Code: 501, Msg: "invalid character in domain"}
		}
	}
	return name, nil
}

func isASCII(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return r >= 0x80 }) < 0
}
