package logfield

import (
	"crypto/rand"
	"encoding/base32"
)

// idEncoding is lower-case base32 without padding: ids are easy to read
// out over the phone, safe in every protocol's reply text, and what the
// fail2ban filters expect after cid= ([a-z2-7]+).
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewID returns a session id: 12 random base32 characters (60 bits).
func NewID() string {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand doc)
	return idEncoding.EncodeToString(b[:])[:12]
}
