package proxy

// The splice's command filter for SMTP and POP3 (issue #14 finding 1).
// After login the client speaks to the backend from mailgate's position,
// so a command a backend grants because of where the sender stands
// (Postfix XCLIENT and XFORWARD, Dovecot pop3-login XCLIENT) must not
// pass from the client. smtpwire.Filter rewrites those verbs so the
// backend refuses them itself; this file plugs it into splice:
//
//   - client→backend: every read goes through Filter.Client; after a
//     DATA line the copy waits for the backend's reply to it (354 starts
//     the message content, which passes untouched).
//   - backend→client (SMTP only): smtpwire.Replies counts final replies
//     to find the one answering DATA; a byte stream that is not SMTP
//     replies ends the session (fail closed).
//
// IMAP needs no filter: Dovecot honours ID x-originating-ip only in
// imap-login, before login (docs/backends.md).

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/proxy/internal/smtpwire"
)

// errBackendNotSMTP ends a spliced SMTP session whose backend sends
// bytes that are not SMTP replies.
var errBackendNotSMTP = errors.New("backend sent a malformed reply")

// errFilterClosed ends the client→backend copy while it waited for the
// reply to DATA and the backend side ended.
var errFilterClosed = errors.New("backend side closed while waiting for the reply to DATA")

// spliceFilter is one session's filter state, shared by both directions.
type spliceFilter struct {
	c       *conn
	f       *smtpwire.Filter // used by the client→backend copy only
	replies *smtpwire.Replies
	finalFn func(n uint64, code int) // sf.final, bound once

	want  atomic.Uint64 // number of the final reply answering DATA; 0: none
	code  chan int      // that reply's code
	done  chan struct{} // closed when the backend→client copy ended
	once  sync.Once
	warns atomic.Bool // the refused-command WARN was logged
}

// newSpliceFilter returns the filter for c's protocol, nil for none.
func (c *conn) newSpliceFilter() *spliceFilter {
	var sf *spliceFilter
	switch c.ln.Protocol {
	case policy.SMTP:
		sf = &spliceFilter{f: smtpwire.NewFilter(smtpwire.SMTPRefusedAfterLogin, true), replies: &smtpwire.Replies{}}
	case policy.POP3:
		sf = &spliceFilter{f: smtpwire.NewFilter(smtpwire.POP3RefusedAfterLogin, false)}
	default:
		return nil
	}
	sf.c = c
	sf.code = make(chan int, 1)
	sf.done = make(chan struct{})
	sf.f.OnRefuse = sf.refused
	sf.finalFn = sf.final
	return sf
}

// refused logs the first refused command of the session and counts
// each. verb is one of smtpwire's fixed names, never client bytes.
func (sf *spliceFilter) refused(verb string) {
	sf.c.metrics().refusedAfterLogin(sf.c.ln.Protocol, verb)
	if sf.warns.CompareAndSwap(false, true) {
		sf.c.log.Warn("command refused after login", "command", verb)
	}
}

// backendDone is called when the backend→client copy ended.
func (sf *spliceFilter) backendDone() { sf.once.Do(func() { close(sf.done) }) }

// final is called by Replies for each final backend reply.
func (sf *spliceFilter) final(n uint64, code int) {
	if n == sf.want.Load() {
		select {
		case sf.code <- code:
		default:
		}
	}
}

// filterUp is the backend connection as the client→backend copy's
// destination: writes go through the filter.
type filterUp struct {
	net.Conn
	sf *spliceFilter
}

// Write sends what the filter makes of p, waiting for the reply to
// DATA where p holds one. The filter's output goes through a buffer
// borrowed from spliceBuffers for the call only, so an idle session
// holds none (splice.go).
func (u filterUp) Write(p []byte) (int, error) {
	sf := u.sf
	total := len(p)
	bp := spliceBuffers.Get().(*[]byte)
	defer spliceBuffers.Put(bp)
	for len(p) > 0 {
		out, n := sf.f.Client((*bp)[:0], p)
		p = p[n:]
		reply, waiting := sf.f.Waiting()
		if waiting {
			// Before DATA goes out: its reply may come at once.
			sf.want.Store(reply)
		}
		if len(out) > 0 {
			if _, err := u.Conn.Write(out); err != nil {
				return total - len(p), err
			}
		}
		if !waiting {
			continue
		}
		select {
		case code := <-sf.code:
			sf.want.Store(0)
			sf.f.Resume(code)
			// The wait may have used up the write deadline the copy set.
			u.Conn.SetWriteDeadline(time.Now().Add(sf.c.lim.IdleTimeout))
		case <-sf.done:
			return total - len(p), errFilterClosed
		}
	}
	return total, nil
}

// flush sends the verb letters held back when the client closed.
func (u filterUp) flush() error {
	out := u.sf.f.Flush(nil)
	if len(out) == 0 {
		return nil
	}
	_, err := u.Conn.Write(out)
	return err
}

// filterDown is the client connection as the backend→client copy's
// destination: SMTP replies are counted before they are passed on.
type filterDown struct {
	net.Conn
	sf *spliceFilter
}

func (d filterDown) Write(p []byte) (int, error) {
	if d.sf.replies != nil {
		if err := d.sf.replies.Feed(p, d.sf.finalFn); err != nil {
			d.sf.c.log.Warn("backend reply malformed; closing", "err", err)
			return 0, errBackendNotSMTP
		}
	}
	return d.Conn.Write(p)
}
