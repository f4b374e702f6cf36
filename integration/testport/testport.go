// Package testport hands out loopback TCP port numbers for tests that
// must name a port before the program that binds it runs: Dovecot,
// Postfix, the mailgate binary, or a component configured by address.
//
// A port picked by binding port 0 and closing the socket again is not
// safe: every other socket that binds port 0 meanwhile (in this process
// or another, such as a parallel test package) may be given the same
// number, and the program that was to bind it then fails with "address
// already in use". Port-0 binds (and the local ports of outgoing
// connections) only ever take ports from the kernel's ephemeral range
// (net.ipv4.ip_local_port_range, shared by IPv4 and IPv6), so Take picks
// its ports outside it, where no port-0 bind can steal them. Within one
// process it never hands out the same port twice (until it has gone
// through the whole range); between processes it starts at a random place
// and holds a lock on each port it hands out (a byte-range lock in a
// shared file under the temporary directory, released when the process
// exits), so two test processes using this package never hand out the
// same port at the same time. Each port is also checked free by a bind.
// What is left, a program outside the tests binding the same number in
// the moment between the check and the real bind, is rare: callers start
// their program again on fresh ports when it reports a port taken (InUse,
// Attempts).
//
// In-process listeners need none of this: bind 127.0.0.1:0 and hand the
// open listener over. For an address where connections must be refused,
// use Refused.
//
// This package imports nothing of mailgate: any package's tests may use
// it.
package testport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Attempts is how many times a caller starts a program on freshly taken
// ports when the program reports one of them taken (InUse).
const Attempts = 3

// minPort is the lowest port handed out: below it live the well-known
// and many registered service ports a machine may start later.
const minPort = 10000

// ephemeralFile is where Linux keeps the range port-0 binds use.
const ephemeralFile = "/proc/sys/net/ipv4/ip_local_port_range"

// Linux's default ephemeral range, assumed when ephemeralFile is
// unreadable.
const defaultEphemeralLo, defaultEphemeralHi = 32768, 60999

// lockName is the file, under the temporary directory, whose byte n is
// locked by the process that handed out port n.
const lockName = "mailgate-testport.lock"

// ErrExhausted means no port outside the ephemeral range is free.
var ErrExhausted = errors.New("testport: no free loopback port outside the ephemeral range")

// span is an inclusive range of ports.
type span struct{ lo, hi int }

// allocator is the process's one source of ports.
type allocator struct {
	mu     sync.Mutex
	inited bool
	spans  []span // ports that may be handed out, outside the ephemeral range
	size   int    // ports in spans
	next   int    // index (over all spans) of the next candidate
	given  map[int]bool
	lock   *os.File // the shared lock file; nil when it cannot be opened
	err    error    // why there are no spans
}

var alloc allocator

// init reads the ephemeral range and opens the lock file, once.
func (a *allocator) init() {
	if a.inited {
		return
	}
	a.inited = true
	lo, hi := ephemeralRange()
	a.spans = outside(lo, hi)
	for _, s := range a.spans {
		a.size += s.hi - s.lo + 1
	}
	if a.size == 0 {
		a.err = fmt.Errorf("%w: the ephemeral range %d-%d (%s) leaves none from %d up", ErrExhausted, lo, hi, ephemeralFile, minPort)
		return
	}
	a.next = rand.IntN(a.size)
	a.given = map[int]bool{}
	// Without the lock file (another user's, a read-only /tmp) ports are
	// still checked by a bind; only the cross-process exclusion is lost.
	if f, err := os.OpenFile(filepath.Join(os.TempDir(), lockName), os.O_RDWR|os.O_CREATE, 0o666); err == nil {
		a.lock = f
	}
}

// ephemeralRange returns the kernel's ephemeral port range.
func ephemeralRange() (lo, hi int) {
	b, err := os.ReadFile(ephemeralFile)
	if err != nil {
		return defaultEphemeralLo, defaultEphemeralHi
	}
	return parseRange(string(b))
}

// parseRange reads ip_local_port_range ("32768\t60999\n"); anything else
// means Linux's default.
func parseRange(s string) (lo, hi int) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return defaultEphemeralLo, defaultEphemeralHi
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
		return defaultEphemeralLo, defaultEphemeralHi
	}
	return lo, hi
}

// outside returns the ports from minPort to 65535 that are not in lo-hi.
func outside(lo, hi int) []span {
	var out []span
	if below := (span{minPort, lo - 1}); below.hi >= below.lo {
		out = append(out, below)
	}
	if above := (span{max(hi+1, minPort), 65535}); above.hi >= above.lo {
		out = append(out, above)
	}
	return out
}

// port returns the port at index i over all spans.
func (a *allocator) port(i int) int {
	for _, s := range a.spans {
		n := s.hi - s.lo + 1
		if i < n {
			return s.lo + i
		}
		i -= n
	}
	panic("testport: index out of range")
}

// inSpans reports whether p may be handed out at all.
func (a *allocator) inSpans(p int) bool {
	for _, s := range a.spans {
		if p >= s.lo && p <= s.hi {
			return true
		}
	}
	return false
}

// claim locks p for this process and checks it free; it reports whether
// p may be handed out.
func (a *allocator) claim(p int) bool {
	if a.given[p] {
		return false
	}
	if a.lock != nil {
		lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: int64(p), Len: 1}
		if syscall.FcntlFlock(a.lock.Fd(), syscall.F_SETLK, &lk) != nil {
			return false // another test process handed it out
		}
	}
	if !free(p) {
		// Keep the lock: the holder may be another process of ours
		// started on that port; another pick is as good.
		return false
	}
	a.given[p] = true
	return true
}

// free reports whether p can be bound on loopback now, over TCP.
func free(p int) bool {
	l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// Take returns n distinct loopback TCP ports, outside the kernel's
// ephemeral range, that were free a moment ago and that no other caller
// of Take (in this process or, through the lock file, another) has been
// given. The program that binds them may still, rarely, find one taken by
// an unrelated program: start it again on fresh ports then (InUse).
func Take(n int) ([]int, error) {
	a := &alloc
	a.mu.Lock()
	defer a.mu.Unlock()
	a.init()
	if a.err != nil {
		return nil, a.err
	}
	out := make([]int, 0, n)
	for tried := 0; len(out) < n; tried++ {
		switch tried {
		case a.size:
			// Every port was looked at: forget what was handed out long
			// ago (its user has most likely let it go; the bind still
			// checks) and go round once more.
			clear(a.given)
			for _, p := range out {
				a.given[p] = true
			}
		case 2 * a.size:
			return nil, ErrExhausted
		}
		p := a.port(a.next)
		a.next = (a.next + 1) % a.size
		if a.claim(p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// Claim hands out exactly the given ports, as Take would have, or none of
// them: for a program that derives its ports from one base number (the
// demo's -port-base). It fails for a port outside the ephemeral range's
// complement, already handed out, locked by another test process, or not
// free now.
func Claim(ports ...int) error {
	a := &alloc
	a.mu.Lock()
	defer a.mu.Unlock()
	a.init()
	if a.err != nil {
		return a.err
	}
	var got []int
	for _, p := range ports {
		if !a.inSpans(p) || !a.claim(p) {
			for _, g := range got {
				delete(a.given, g)
			}
			return fmt.Errorf("testport: port %d is not available", p)
		}
		got = append(got, p)
	}
	return nil
}

// InUse reports whether text (an error, a program's log) says that a
// port could not be bound because it was taken: Go's "bind: address
// already in use", Dovecot's and Postfix's "Address already in use".
func InUse(text string) bool {
	return strings.Contains(strings.ToLower(text), "address already in use")
}

// Refused binds a loopback TCP socket that never listens and returns its
// "127.0.0.1:port": connections to it are refused for as long as it is
// open, and no other socket can take the port meanwhile (a port that was
// merely free a moment ago could be). Call closeFn when done.
func Refused() (addr string, closeFn func() error, err error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("testport: %w", err)
	}
	closeFn = func() error { return syscall.Close(fd) }
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		closeFn()
		return "", nil, fmt.Errorf("testport: bind: %w", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		closeFn()
		return "", nil, fmt.Errorf("testport: %w", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)), closeFn, nil
}

// Listens reports whether process pid holds a TCP socket listening on
// port, read from Linux's /proc: a program started on a picked port is
// only known to be up once it is the one listening there, since a
// connection to the port proves nothing if another program took it. known
// is false where /proc cannot tell (not Linux); callers then fall back to
// connecting.
func Listens(pid, port int) (listens, known bool) {
	inodes := map[string]bool{}
	read := false
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		read = true
		for _, ino := range listenInodes(string(b), port) {
			inodes[ino] = true
		}
	}
	if !read {
		return false, false
	}
	if len(inodes) == 0 {
		return false, true
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false, true // gone, or not ours to look at
	}
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join(dir, fd.Name()))
		if err != nil {
			continue
		}
		if ino, ok := strings.CutPrefix(l, "socket:["); ok && inodes[strings.TrimSuffix(ino, "]")] {
			return true, true
		}
	}
	return false, true
}

// tcpListen is the state of a listening socket in /proc/net/tcp.
const tcpListen = "0A"

// listenInodes returns the inodes of the sockets a /proc/net/tcp (or
// tcp6) table lists as listening on port.
func listenInodes(table string, port int) []string {
	var out []string
	for _, line := range strings.Split(table, "\n") {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != tcpListen {
			continue
		}
		i := strings.LastIndexByte(f[1], ':')
		if i < 0 {
			continue
		}
		p, err := strconv.ParseUint(f[1][i+1:], 16, 16)
		if err != nil || int(p) != port {
			continue
		}
		out = append(out, f[9])
	}
	return out
}
