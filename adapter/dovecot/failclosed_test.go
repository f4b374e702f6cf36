package dovecot

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailgate/mailgate/adapter"
)

// Every request mailgate refuses before a decision (no or a wrong
// secret, another method, an unknown command) gets HTTP 200 and -1,
// which Dovecot takes as a refusal whatever auth_policy_reject_on_fail
// says; an HTTP error it would take as no opinion, letting the login go
// on unchecked. Each is counted, and logged at most once a minute.
func TestRefusalsFailClosed(t *testing.T) {
	e := newEnv(t, quiet(), Config{})
	e.h.o.Metrics = NewMetrics(prometheus.NewRegistry())
	const secret = "0123456789abcdef-dovecot"
	sec := adapter.NewSecrets(SecretHeader, secret, e.h.log)
	h := Protect(sec.Current, e.h)
	ask := func(method, target, key string) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest(method, target, strings.NewReader(dovecotAllow))
		if key != "" {
			r.Header.Set(SecretHeader, key)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for _, tc := range []struct{ name, method, target, key string }{
		{"no secret", "POST", "/?command=allow", ""},
		{"wrong secret", "POST", "/?command=allow", "0123456789abcdef-dovecoT"},
		{"wrong secret, report", "POST", "/?command=report", "wrong"},
		{"second wrong secret", "POST", "/?command=allow", "x"},
		{"GET", "GET", "/?command=allow", secret},
		{"PUT", "PUT", "/?command=allow", secret},
		{"unknown command", "POST", "/?command=allowx", secret},
		{"no command", "POST", "/", secret},
	} {
		w := ask(tc.method, tc.target, tc.key)
		if w.Code != http.StatusOK || w.Body.String() != `{"status":-1,"msg":""}`+"\n" {
			t.Errorf("%s: HTTP %d %q, want 200 and status -1", tc.name, w.Code, w.Body)
		}
	}
	m := e.h.o.Metrics.requests
	for _, want := range []struct {
		command, result string
		n               float64
	}{
		{"allow", "unauthorized", 3}, {"report", "unauthorized", 1},
		{"allow", "bad_method", 2}, {"other", "bad_command", 2},
	} {
		if n := testutil.ToFloat64(m.WithLabelValues(want.command, want.result)); n != want.n {
			t.Errorf("requests{%s,%s} = %v, want %v", want.command, want.result, n, want.n)
		}
	}
	log := e.log.String()
	if n := strings.Count(log, "adapter request refused: missing or wrong secret"); n != 1 {
		t.Errorf("%d secret refusal lines, want 1 a minute:\n%s", n, log)
	}
	if n := strings.Count(log, "dovecot policy: request refused"); n != 1 {
		t.Errorf("%d method/command refusal lines, want 1 a minute:\n%s", n, log)
	}
	if strings.Contains(log, "AUTHPASS") || e.h.park.len() != 0 {
		t.Errorf("a refused request was judged:\n%s", log)
	}
	// With the secret, the same request is judged.
	if w := ask("POST", "/?command=allow", secret); w.Body.String() != `{"status":0,"msg":""}`+"\n" {
		t.Errorf("with the secret: %q, want status 0", w.Body)
	}
}
