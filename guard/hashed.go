package guard

import "net/netip"

// hashedMark starts the counting key of a password known only by a hash.
// The proxy's passwords never hold a NUL (it refuses them), so no
// password it counts can equal a marked key: the two never mix.
const hashedMark = "\x00hashed\x00"

// AttemptHashed is Attempt for a caller that never sees the password,
// only a hash of it that the same password always gives: Dovecot's
// auth_policy requests carry its truncated, nonce-keyed hash (scheme
// "dovecot"). Distinct wrong passwords are counted by that hash, in a
// namespace of their own per scheme, never mixed with the proxy's
// passwords; everything else (bans, lockouts, reservations, the tarpit)
// is the same as for Attempt. Fingerprint of such an attempt means
// nothing and callers must not log it.
func (g *Guard) AttemptHashed(scheme, login string, addr netip.Addr, hash string) *Attempt {
	return g.Attempt(login, addr, hashedMark+scheme+"\x00"+hash)
}
