package audit

import "testing"

// TestClassify pins the row each decision line becomes, the one mapping
// the proxy and the Dovecot adapter share.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		event, reason, rule string
		result, cause       string
	}{
		{"AUTHPASS", "allowed country", "default_allow", ResultPass, "default_allow"},
		{"COUNTRYFAILED", "country RU not allowed", "default_allow", ResultDenied, "default_allow: country RU not allowed"},
		{"COUNTRYFAILED", "no location", "", ResultDenied, "no location"},
		{"AUTHLOCKED", "guard: login locked", "", ResultGuard, "login locked"},
		{"AUTHFAILED", "guard: address banned", "", ResultGuard, "address banned"},
		{"AUTHFAILED", "backend refused credentials", "default_allow", ResultFailed, "backend refused credentials"},
		{"AUTHFAILED", "user name too long", "", ResultInvalid, "user name too long"},
		{"", "backend unavailable", "default_allow", ResultUnavailable, "backend unavailable"},
	} {
		r, c := Classify(tc.event, tc.reason, tc.rule)
		if r != tc.result || c != tc.cause {
			t.Errorf("Classify(%q, %q, %q) = %q, %q; want %q, %q", tc.event, tc.reason, tc.rule, r, c, tc.result, tc.cause)
		}
	}
}
