package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/backend"
)

// spliceBufferSize is each direction's copy buffer: large enough for
// FETCH bodies to move in few syscalls, small enough for many sessions.
const spliceBufferSize = 32 << 10

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

	if len(sess.Buffered) > 0 {
		c.nc.SetWriteDeadline(time.Now().Add(c.lim.IdleTimeout))
		if _, err := c.nc.Write(sess.Buffered); err != nil {
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
	down := make(chan result, 1)
	go func() {
		src, err := c.pump(c.nc, be, be, &last, "backend")
		if err == nil {
			// Backend finished sending: pass the half-close on.
			closeWrite(c.nc)
		} else {
			c.forceClose()
		}
		down <- result{err, src}
	}()
	upSrc, upErr := c.pump(be, c.br, c.nc, &last, "client")
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
	buf := make([]byte, spliceBufferSize)
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
