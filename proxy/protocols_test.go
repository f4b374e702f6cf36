package proxy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/policy"
)

// Every protocol has a last line for every shared close reason, also
// when the reason arrives wrapped, and none for reasons that close
// silently.
func TestEveryProtocolSaysGoodbye(t *testing.T) {
	s := NewServer(Options{Hostname: "mx.test"})
	wantPrefix := map[policy.Protocol]string{policy.IMAP: "* BYE ", policy.POP3: "-ERR ", policy.SMTP: "421 "}
	for p, prefix := range wantPrefix {
		h := handlerFor(p)
		c := &conn{srv: s, ln: Listener{Protocol: p}}
		for _, reason := range goodbyeReasons {
			for _, r := range []error{reason, fmt.Errorf("proxy: reading: %w", reason)} {
				if got := h.goodbye(c, r); !strings.HasPrefix(got, prefix) || strings.ContainsAny(got, "\r\n") {
					t.Errorf("%s goodbye for %q = %q, want one %q line", p, r, got, prefix)
				}
			}
		}
		for _, r := range []error{errLogout, errUntrustedProxy, fmt.Errorf("some I/O error")} {
			if got := h.goodbye(c, r); got != "" {
				t.Errorf("%s goodbye for %q = %q, want none", p, r, got)
			}
		}
	}
}
