package admin

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// One token check for every protected path: a missing, wrong or
// malformed token, and no token configured at all, get the same answer
// (401, WWW-Authenticate: Bearer, the same text) on POST /reload and on
// everything under /guard/; nothing behind the check runs.
func TestOneTokenCheck(t *testing.T) {
	g := newGuard(t, nil)
	var reloads atomic.Int32
	reload := func() error { reloads.Add(1); return nil }
	type answer struct {
		code      int
		challenge string
		body      string
	}
	var first *answer
	for _, tc := range []struct {
		name, serverToken, header string
	}{
		{"no header", testToken, ""},
		{"wrong token", testToken, "Bearer wrong"},
		{"token prefix", testToken, "Bearer " + testToken[:5]},
		{"token with suffix", testToken, "Bearer " + testToken + "x"},
		{"basic scheme", testToken, "Basic " + testToken},
		{"lower-case scheme", testToken, "bearer " + testToken},
		{"no server token", "", "Bearer "},
		{"no server token, any token", "", "Bearer " + testToken},
	} {
		h := New(Config{Token: tc.serverToken, Guard: g, Reload: reload}).Handler()
		for _, ep := range []struct{ method, path string }{
			{"POST", "/reload"},
			{"GET", "/guard/bans"}, {"POST", "/guard/bans"}, {"DELETE", "/guard/bans?prefix=192.0.2.1"},
			{"GET", "/guard/lockouts"}, {"POST", "/guard/unlock?user=alice"}, {"GET", "/guard/nothing"},
		} {
			req := httptest.NewRequest(ep.method, ep.path, strings.NewReader(`{"prefix":"192.0.2.1","duration":"1h"}`))
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			got := answer{rec.Code, rec.Header().Get("WWW-Authenticate"), rec.Body.String()}
			if first == nil {
				first = &got
			}
			if got.code != http.StatusUnauthorized || !strings.HasPrefix(got.challenge, "Bearer") || got != *first {
				t.Errorf("%s: %s %s = %+v, want 401 with a Bearer challenge, as %+v", tc.name, ep.method, ep.path, got, *first)
			}
		}
	}
	if b := g.Bans(); len(b) != 0 {
		t.Fatalf("refused requests added bans: %+v", b)
	}
	if n := reloads.Load(); n != 0 {
		t.Fatalf("refused requests reloaded %d times", n)
	}

	// The right token passes on both.
	h := New(Config{Token: testToken, Guard: g, Reload: reload}).Handler()
	for _, path := range []string{"/reload", "/guard/lockouts"} {
		method := "POST"
		if path == "/guard/lockouts" {
			method = "GET"
		}
		req := httptest.NewRequest(method, path, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Errorf("%s %s with the token = %d %q", method, path, rec.Code, rec.Body)
		}
	}
	if reloads.Load() != 1 {
		t.Errorf("reloads = %d, want 1", reloads.Load())
	}
}

// Refusals are logged once per RefusalLogInterval, whichever path they
// hit; the guard's API has no log line of its own any more.
func TestRefusalLogRateLimited(t *testing.T) {
	var buf syncBuf
	h := New(Config{Token: testToken, Guard: newGuard(t, nil), Log: slog.New(slog.NewTextHandler(&buf, nil)),
		Reload: func() error { return nil }}).Handler()
	for i := range 50 {
		for _, p := range []string{"/reload", "/guard/bans"} {
			req := httptest.NewRequest("POST", p, strings.NewReader("{}"))
			if i%2 == 0 {
				req.Header.Set("Authorization", "Bearer wrong-token-wrong-token")
			}
			h.ServeHTTP(httptest.NewRecorder(), req)
		}
	}
	if n := strings.Count(buf.String(), "refused"); n != 1 {
		t.Errorf("%d WARN lines for 100 refused requests, want 1:\n%s", n, buf.String())
	}
}

func TestReloadReplies(t *testing.T) {
	fail := errors.Join(errors.New("config: a"), errors.New("config: b"))
	h := New(Config{Token: testToken, Reload: func() error { return fail }}).Handler()
	req := httptest.NewRequest("POST", "/reload", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	want := "reload failed; previous config kept: config: a\nreload failed; previous config kept: config: b\n"
	if rec.Code != http.StatusConflict || rec.Body.String() != want {
		t.Errorf("failed reload = %d %q", rec.Code, rec.Body)
	}
}

// /readyz asks Ready at most once per ReadyCacheTTL.
func TestReadyzCached(t *testing.T) {
	var calls atomic.Int32
	h := New(Config{Ready: func(context.Context) []string {
		calls.Add(1)
		return []string{"backends.imap down"}
	}}).Handler()
	for range 3 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		if rec.Code != http.StatusServiceUnavailable || rec.Body.String() != "backends.imap down\n" {
			t.Errorf("/readyz = %d %q", rec.Code, rec.Body)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("Ready called %d times, want 1", n)
	}
}

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	good := filepath.Join(dir, "good")
	os.WriteFile(short, []byte("abc\n"), 0o600)
	os.WriteFile(good, []byte(testToken+"\n"), 0o600)
	if tok, err := ReadToken(""); tok != "" || err != nil {
		t.Errorf("no file: %q, %v", tok, err)
	}
	if tok, err := ReadToken(good); tok != testToken || err != nil {
		t.Errorf("good file: %q, %v", tok, err)
	}
	for file, want := range map[string]string{filepath.Join(dir, "missing"): "admin.token_file", short: "at least 16"} {
		if _, err := ReadToken(file); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", file, err, want)
		}
	}
}

// syncBuf is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
