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
