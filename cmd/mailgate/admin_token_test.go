package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Issue #15: the admin listener has one token check. POST /reload and the
// guard's /guard/ API give the same answer to a missing or wrong token,
// and to any token when no admin.token_file is configured: 401 with a
// Bearer challenge (before, /reload answered 404 without a token file,
// and the two checks answered in different formats).
func TestAdminOneTokenCheck(t *testing.T) {
	e := startOpsEnv(t)
	var first string
	for _, token := range []string{testAdminToken, ""} {
		h := newAdminServer(e.g, token, nil).Handler()
		for _, auth := range []string{"", "Bearer wrong-token-wrong-token", "Bearer "} {
			for _, ep := range []struct{ method, path string }{{"POST", "/reload"}, {"GET", "/guard/bans"}, {"POST", "/guard/unlock?user=a"}} {
				req := httptest.NewRequest(ep.method, ep.path, nil)
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				got := rec.Result().Status + " " + rec.Header().Get("WWW-Authenticate") + " " + rec.Body.String()
				if first == "" {
					first = got
				}
				if rec.Code != http.StatusUnauthorized || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") || got != first {
					t.Errorf("token %q, %q: %s %s = %q, want 401 with a Bearer challenge, as %q", token, auth, ep.method, ep.path, got, first)
				}
			}
		}
	}
}
