package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/backend"
)

// Copy buffers. An idle session (IMAP IDLE, a client left open for the
// day) spends its life blocked in Read, so each direction waits with a
// small buffer of its own and borrows a big one from a pool only while a
// transfer fills the small one: idle sessions then cost a few KiB
// instead of 64 (docs/BENCHMARKS.md, "Memory per idle session").
const (
	// spliceBufferSize is the pooled buffer for data in flight: large
	// enough for FETCH bodies to move in few syscalls.
	spliceBufferSize = 32 << 10
	// spliceIdleBufferSize is what a direction holds while it waits:
	// room for a command, a NOOP reply or an IDLE update.
	spliceIdleBufferSize = 1 << 10
)

// spliceBuffers holds the big copy buffers between transfers.
var spliceBuffers = sync.Pool{New: func() any {
	b := make([]byte, spliceBufferSize)
	return &b
}}

// errSpliceIdle ends a splice with no traffic either way for IdleTimeout.
var errSpliceIdle = errors.New("idle timeout")

// splice copies bytes between the client and the logged-in backend until
// either side is done, and returns the close reason.
//
// Order matters: the backend bytes read past its login reply go to the
// client first; the client's bytes pipelined after its login command are
// still in c.br and so reach the backend before anything read later. The
// session goroutine copies client→backend; one extra goroutine copies
// backend→client. Both stop on their own (EOF, error, idle) or when the
// other side is closed, and splice returns only after both did.
func (c *conn) splice(sess *backend.Session) string {
	be := sess.Conn
	c.backendConn.Store(&be)
	c.state.Store(int32(stateSpliced))
	c.log.Debug("splicing")

	// SMTP and POP3 copy through a command filter (smtpfilter.go);
	// IMAP copies straight.
	upDst, downDst := be, c.nc
	sf := c.newSpliceFilter()
	var up filterUp
	if sf != nil {
		up = filterUp{be, sf}
		upDst, downDst = up, filterDown{c.nc, sf}
	}

	if len(sess.Buffered) > 0 {
		c.nc.SetWriteDeadline(time.Now().Add(c.lim.IdleTimeout))
		if _, err := downDst.Write(sess.Buffered); err != nil {
			return "client write failed"
		}
	}

	// last is the time of the last traffic either way, in Unix
	// nanoseconds; each direction's read deadline is derived from it so
	// traffic one way keeps the other way alive (IMAP IDLE).
	var last atomic.Int64
	last.Store(time.Now().UnixNano())

	type result struct {
		err    error
		source string // "client" or "backend": whose read or write ended it
	}
	// The backend→client copy starts first: the filter may wait for a
	// reply while it sends the client's pipelined bytes below.
	down := make(chan result, 1)
	go func() {
		src, err := c.pump(downDst, be, be, &last, "backend")
		if sf != nil {
			sf.backendDone()
		}
		if err == nil {
			// Backend finished sending: pass the half-close on.
			closeWrite(c.nc)
		} else {
			c.forceClose()
		}
		down <- result{err, src}
	}()

	// The client's bytes pipelined after its login are still in c.br:
	// they go first, then c.br goes back to the pool and the copy reads
	// c.nc directly, so its 16 KiB buffer does not live as long as the
	// session.
	var upSrc string
	var upErr error
	if n := c.br.Buffered(); n > 0 {
		p, _ := c.br.Peek(n)
		be.SetWriteDeadline(time.Now().Add(c.lim.IdleTimeout))
		if _, err := upDst.Write(p); err != nil {
			upSrc, upErr = "backend", err
		}
	}
	c.dropReader()
	if upErr == nil {
		upSrc, upErr = c.pump(upDst, c.nc, c.nc, &last, "client")
	}
	if upErr == nil && sf != nil {
		upErr = up.flush()
	}
	if upErr == nil {
		closeWrite(be)
	} else {
		c.forceClose()
	}
	d := <-down
	be.Close()

	switch {
	case errors.Is(upErr, errSpliceIdle) || errors.Is(d.err, errSpliceIdle):
		return "idle timeout"
	case errors.Is(d.err, errBackendNotSMTP):
		return "backend error"
	case upErr == nil && d.err == nil:
		return "closed"
	case upErr != nil && c.srv.closing.Load():
		return "server shutting down"
	case upErr != nil:
		return upSrc + " error"
	}
	return d.source + " error"
}

// pump copies src to dst until EOF (nil), an error, or IdleTimeout without
// traffic either way (errSpliceIdle). deadlineConn is the connection under
// src, whose read deadline it manages. The second result names the side
// whose failure ended the copy.
func (c *conn) pump(dst net.Conn, src io.Reader, deadlineConn net.Conn, last *atomic.Int64, srcName string) (string, error) {
	idle := c.lim.IdleTimeout
	dstName := "client"
	if srcName == "client" {
		dstName = "backend"
	}
	small := make([]byte, spliceIdleBufferSize)
	buf := small
	var big *[]byte // borrowed from spliceBuffers while data flows
	defer func() {
		if big != nil {
			spliceBuffers.Put(big)
		}
	}()
	for {
		deadlineConn.SetReadDeadline(time.Unix(0, last.Load()).Add(idle))
		n, err := src.Read(buf)
		if n > 0 {
			now := time.Now()
			last.Store(now.UnixNano())
			dst.SetWriteDeadline(now.Add(idle))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return dstName, werr
			}
		}
		// Swap buffers only after the write: buf[:n] must not go back to
		// the pool while it is still to be sent.
		switch {
		case n == len(buf) && big == nil:
			// A full small read: a transfer is under way.
			big = spliceBuffers.Get().(*[]byte)
			buf = *big
		case n < len(buf) && big != nil:
			// The transfer caught up with the sender; the next read is
			// likely to wait, so wait with the small buffer.
			spliceBuffers.Put(big)
			big, buf = nil, small
		}
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			return srcName, nil
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			if time.Since(time.Unix(0, last.Load())) < idle {
				continue // the other direction was busy
			}
			return srcName, errSpliceIdle
		}
		return srcName, err
	}
}

// closeWrite half-closes w's sending side so the peer sees EOF while its
// own data may still come back. Over TLS that is close_notify followed by
// a TCP half-close. Without half-close support the socket is closed.
func closeWrite(w net.Conn) {
	if tc, ok := w.(*tls.Conn); ok {
		tc.CloseWrite() // close_notify; does not touch the socket (crypto/tls doc)
		w = tc.NetConn()
	}
	if bc, ok := w.(*bufferedConn); ok {
		w = bc.Conn
	}
	if cw, ok := w.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	w.Close()
}
