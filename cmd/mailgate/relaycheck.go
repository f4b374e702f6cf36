package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/mailgate/mailgate/backend"
)

// relayProbeTimeout bounds check-config's relay probe of the SMTP backend.
const relayProbeTimeout = 15 * time.Second

// warnSMTPRelay runs the SMTP backend's relay probe (backend.ProbeRelay)
// and prints a warning with the fix when the backend will not relay to
// other domains for the users mailgate logs in, or when it could not be
// asked. Warnings do not change check-config's exit status: the backend
// may simply not run yet where the config is checked.
func warnSMTPRelay(st *state, w io.Writer) {
	b, ok := st.opts.SMTP.(*backend.SMTP)
	if !ok || b == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), relayProbeTimeout)
	defer cancel()
	warn, err := b.ProbeRelay(ctx)
	switch {
	case err != nil:
		fmt.Fprintf(w, "warning: backends.smtp: relaying for logged-in users not checked: %v\n", err)
	case warn != "":
		fmt.Fprintf(w, "warning: backends.smtp: %s\n", warn)
	}
}

// authProbeTimeout bounds check-config's probe of Dovecot's auth socket.
const authProbeTimeout = 5 * time.Second

// warnDovecotAuth, with verify: dovecot-auth, connects to Dovecot's auth
// socket and reads its handshake (backend.ProbeDovecotAuth), and prints a
// warning when that fails: every submission login would then fail. Like
// the relay probe it does not change the exit status.
func warnDovecotAuth(cfg *Config, w io.Writer) {
	s := cfg.Backends.SMTP
	if s.Verify != backend.VerifyDovecotAuth {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), authProbeTimeout)
	defer cancel()
	if err := backend.ProbeDovecotAuth(ctx, s.DovecotAuth); err != nil {
		fmt.Fprintf(w, "warning: backends.smtp.dovecot_auth: Dovecot's auth socket %s does not answer (%v); every submission login would fail\n", s.DovecotAuth, err)
	}
}
