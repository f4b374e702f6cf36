// Package authlimit is the one source of the bounds on the credentials a
// client may send and mailgate may carry to a backend, and on the SASL
// lines that carry them: the SASL limits. The client side (the proxy's
// SASL server, its IMAP LOGIN and POP3 USER/PASS, its line reader) and the
// backend side (which refuses to send anything longer) both read them
// here, so a credential the proxy accepts is one the backend client sends,
// and the two can never drift apart.
//
// It is a leaf of constants at the module root because backend, which
// imports no other mailgate package, cannot import proxy/internal/sasl;
// it imports nothing.
package authlimit

const (
	// MaxUsername bounds a user name (and the SASL PLAIN authzid), octets:
	// a mail address is at most 64 + 1 + 255 = 320 octets (RFC 5321
	// 4.5.3.1.1 and 4.5.3.1.2). One bound for every mechanism (IMAP
	// LOGIN, POP3 USER, SASL PLAIN and LOGIN), so a name works with all
	// of them or with none.
	MaxUsername = 320
	// MaxPassword bounds a password, octets. RFC 4616 2 lets a PLAIN
	// field be 255 octets, but real deployments use longer passwords
	// (generated tokens, passphrases); longer than this is an attack,
	// not a user.
	MaxPassword = 1024
	// MaxSASLLine bounds one SASL line, CRLF included: an AUTH or
	// AUTHENTICATE command with its initial response, and each client
	// response. RFC 4954 4 requires SMTP servers to accept 12288 octets;
	// IMAP (RFC 9051 6.2.2) and POP3 (RFC 5034 4, exempt from the
	// 255-octet command limit) use the same bound. It holds a base64
	// PLAIN message of the longest name and password with room to spare.
	MaxSASLLine = 12288
)
