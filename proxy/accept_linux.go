package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
)

// maxRefusedBatch bounds the refusals handled in one wake-up of the
// accept loop, so Close (which waits for the loop) and the shutdown
// check get their turn during a flood.
const maxRefusedBatch = 64

// rawListener accepts on a TCP listener's socket with accept4 itself so
// the guard can refuse a peer before the socket becomes a net.Conn: a
// refused attempt then costs accept4 and close and nothing else (no
// poller registration, finalizer or socket options), which is what a
// flood from a banned source should cost (docs/BENCHMARKS.md, "Refused
// before TLS"). An admitted socket is wrapped by net.FileConn, a few
// system calls more than net.Listener.Accept, against a TLS handshake.
//
// It accepts on a duplicate of the listener's descriptor (a listener's
// own RawConn offers only Control); the socket listens until both are
// closed, so Close closes both.
type rawListener struct {
	net.Listener
	f  *os.File
	rc syscall.RawConn
}

// newRawListener returns nil when ln is not a TCP listener or its
// socket cannot be duplicated; the caller then uses ln.Accept.
func newRawListener(ln net.Listener) *rawListener {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil
	}
	// The duplicate shares the socket's non-blocking flag, so os.File
	// registers it with the poller and RawConn.Read waits there. Never
	// call f.Fd(): it would switch the shared flag to blocking.
	f, err := tl.File()
	if err != nil {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil
	}
	return &rawListener{Listener: ln, f: f, rc: rc}
}

func (r *rawListener) Close() error {
	return errors.Join(r.f.Close(), r.Listener.Close())
}

// acceptAdmitted returns the next connection whose peer admit accepts,
// with the peer address the guard saw, closing the others at the
// descriptor level. After maxRefusedBatch refusals in a row it returns
// errRefusedBatch instead: closing the listener waits for this loop,
// and a flood of refused peers must not hold off a shutdown.
func (r *rawListener) acceptAdmitted(admit func(netip.AddrPort) bool) (net.Conn, netip.AddrPort, error) {
	nfd := -1
	var peer netip.AddrPort
	var aerr error
	err := r.rc.Read(func(fd uintptr) bool {
		for refused := 0; ; refused++ {
			if refused == maxRefusedBatch {
				aerr = errRefusedBatch
				return true
			}
			// Blocking mode on purpose: os.NewFile below then leaves the
			// socket out of the poller, and net.FileConn registers its
			// own non-blocking duplicate.
			s, sa, err := syscall.Accept4(int(fd), syscall.SOCK_CLOEXEC)
			switch {
			case err == syscall.EAGAIN:
				return false // wait in the poller
			case err == syscall.EINTR || err == syscall.ECONNABORTED:
				continue // as net's accept: the peer gave up in the queue
			case err != nil:
				aerr = os.NewSyscallError("accept4", err)
				return true
			}
			if peer = sockaddrAddrPort(sa); admit(peer) {
				nfd = s
				return true
			}
			syscall.Close(s)
		}
	})
	if err != nil {
		return nil, peer, err
	}
	if aerr != nil {
		return nil, peer, aerr
	}
	f := os.NewFile(uintptr(nfd), "")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, peer, fmt.Errorf("%w: %w", errWrapAccepted, err)
	}
	return nc, peer, nil
}

func sockaddrAddrPort(sa syscall.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *syscall.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}
