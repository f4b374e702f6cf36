package dovecot

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/authlimit"
)

// The adapter refuses a login name for exactly the reasons the proxy
// and the nginx adapter do (authlimit, the one place of the limits), and
// logs the same reason.
func TestLoginLimitsAreAuthlimits(t *testing.T) {
	for _, login := range []string{"alice@example.test", "", strings.Repeat("a", authlimit.MaxUsername),
		strings.Repeat("a", authlimit.MaxUsername+1), "a\r\nb", "a\x00b", "\u00e4lice"} {
		b := body(login, "192.0.2.1", "S", "0abc")
		raw, _ := json.Marshal(b)
		_, err := parseRequest(raw, false)
		want := authlimit.CheckUser(login)
		switch {
		case want == "" && err != nil:
			t.Errorf("%q refused (%v); authlimit accepts it", login, err)
		case want != "" && (err == nil || !strings.HasSuffix(err.Error(), want)):
			t.Errorf("%q: %v, want the refusal %q", login, err, want)
		}
	}
}
