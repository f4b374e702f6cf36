package backend

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"time"
)

// maxCacheEntries bounds the verification cache; at the limit the oldest
// entry goes. 10,000 successful logins a minute is far beyond one
// mailgate, and each entry costs about 100 bytes.
const maxCacheEntries = 10000

// verifyCache remembers successful (user, password) verifications for a
// TTL so a client sending many messages costs one IMAP login, not one per
// connection. It stores only an HMAC-SHA256 of user, NUL and password
// under a random key made for this process: the password is not
// recoverable from memory dumps, and the key never leaves the process.
// Failures are never cached, so a wrong password always reaches the
// backend (and its own rate limiting).
type verifyCache struct {
	ttl time.Duration

	mu      sync.Mutex
	key     []byte                 // HMAC key; nil until first use
	expires map[[32]byte]time.Time // live entries
	order   []cacheEntry           // insertion order, oldest first, from head
	head    int                    // first live position in order
	now     func() time.Time       // time source; tests replace it
}

type cacheEntry struct {
	sum     [32]byte
	expires time.Time
}

func newVerifyCache(ttl time.Duration) *verifyCache {
	return &verifyCache{ttl: ttl, expires: map[[32]byte]time.Time{}, now: time.Now}
}

// sum returns the cache key of user and pass. Called with mu held.
func (c *verifyCache) sum(user, pass string) [32]byte {
	if c.key == nil {
		c.key = make([]byte, 32)
		rand.Read(c.key) // never fails (crypto/rand docs, Go 1.24+)
	}
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(pass))
	var s [32]byte
	copy(s[:], m.Sum(nil))
	return s
}

// ok reports whether user and pass were verified within the TTL.
func (c *verifyCache) ok(user, pass string) bool {
	if c == nil || c.ttl <= 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sum(user, pass)
	exp, found := c.expires[s]
	if !found {
		return false
	}
	if !c.now().Before(exp) {
		delete(c.expires, s)
		return false
	}
	return true
}

// add records a successful verification.
func (c *verifyCache) add(user, pass string) {
	if c == nil || c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sum(user, pass)
	exp := c.now().Add(c.ttl)
	c.expires[s] = exp
	c.order = append(c.order, cacheEntry{s, exp})
	for len(c.expires) > maxCacheEntries || len(c.order)-c.head > 2*maxCacheEntries {
		c.evictOldest()
	}
	if c.head > len(c.order)/2 {
		// Drop the consumed prefix so order does not grow forever.
		c.order = append(c.order[:0], c.order[c.head:]...)
		c.head = 0
	}
}

// evictOldest drops the oldest queue position; its map entry goes too
// unless the same credentials were added again later.
func (c *verifyCache) evictOldest() {
	e := c.order[c.head]
	c.order[c.head] = cacheEntry{}
	c.head++
	if exp, found := c.expires[e.sum]; found && exp.Equal(e.expires) {
		delete(c.expires, e.sum)
	}
}

// len returns the number of live entries (tests).
func (c *verifyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.expires)
}
