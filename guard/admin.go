package guard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
	"unicode"
)

// Admin API limits.
const (
	// maxAdminBody bounds a request body; a ban request is ~100 bytes.
	maxAdminBody = 64 << 10
	// maxAdminResponse bounds what AdminRequest reads: max_tracked bans
	// at ~150 bytes each.
	maxAdminResponse = 64 << 20
	// maxAdminBan bounds a manual ban; longer belongs in a firewall or
	// guard.deny_networks.
	maxAdminBan = 366 * 24 * time.Hour
	// maxReason bounds the reason text that goes to logs and the state file.
	maxReason = 200
)

// BanRequest is the body of POST /bans.
type BanRequest struct {
	// Prefix is a CIDR or a single address.
	Prefix string `json:"prefix"`
	// Duration is a Go duration ("1h", "90m").
	Duration string `json:"duration"`
	// Reason is shown in `mailgate bans list` and the log; default "admin".
	Reason string `json:"reason,omitempty"`
}

// parseBanRequest decodes and checks a POST /bans body.
func parseBanRequest(data []byte) (netip.Prefix, time.Duration, string, error) {
	var r BanRequest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return netip.Prefix{}, 0, "", fmt.Errorf("body: %v", err)
	}
	if dec.More() {
		return netip.Prefix{}, 0, "", errors.New("body: data after the JSON object")
	}
	p, err := parsePrefix(r.Prefix)
	if err != nil {
		return netip.Prefix{}, 0, "", fmt.Errorf("prefix: %q is neither a CIDR nor an address", r.Prefix)
	}
	d, err := time.ParseDuration(r.Duration)
	if err != nil || d <= 0 || d > maxAdminBan {
		return netip.Prefix{}, 0, "", fmt.Errorf("duration: %q is not a duration between 1s and %v", r.Duration, maxAdminBan)
	}
	if len(r.Reason) > maxReason || strings.ContainsFunc(r.Reason, func(c rune) bool { return !unicode.IsPrint(c) }) {
		return netip.Prefix{}, 0, "", fmt.Errorf("reason: at most %d printable characters", maxReason)
	}
	if r.Reason == "" {
		r.Reason = "admin"
	}
	return p, d, r.Reason, nil
}

// AdminHandler serves the admin API, to be mounted on a loopback or unix
// socket listener:
//
//	GET    /bans               list active bans
//	POST   /bans               {"prefix": "192.0.2.0/24", "duration": "24h", "reason": "..."}
//	DELETE /bans?prefix=P      lift the ban of exactly P
//	GET    /lockouts           list locked logins
//	POST   /unlock?user=U      unlock a login (failure or compromise lockout)
//
// Every request needs "Authorization: Bearer <token>"; the token is
// compared in constant time. An empty token refuses every request.
// Replies are JSON; errors are {"error": "..."}.
func (g *Guard) AdminHandler(token string) http.Handler {
	want := sha256.Sum256([]byte(token))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bans", func(w http.ResponseWriter, r *http.Request) {
		bans := g.Bans()
		if bans == nil {
			bans = []Ban{}
		}
		writeJSON(w, http.StatusOK, bans)
	})
	mux.HandleFunc("POST /bans", func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body: larger than %d bytes", maxAdminBody))
			return
		}
		p, d, reason, err := parseBanRequest(data)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		b, err := g.AddBan(p, d, reason)
		if err != nil {
			writeError(w, http.StatusConflict, err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, b)
	})
	mux.HandleFunc("DELETE /bans", func(w http.ResponseWriter, r *http.Request) {
		p, err := parsePrefix(r.URL.Query().Get("prefix"))
		if err != nil {
			writeError(w, http.StatusBadRequest, "prefix: want ?prefix=CIDR or address")
			return
		}
		if !g.RemoveBan(p) {
			writeError(w, http.StatusNotFound, "no ban of "+p.String())
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"removed": p.String()})
	})
	mux.HandleFunc("GET /lockouts", func(w http.ResponseWriter, r *http.Request) {
		l := g.Lockouts()
		if l == nil {
			l = []Lockout{}
		}
		writeJSON(w, http.StatusOK, l)
	})
	mux.HandleFunc("POST /unlock", func(w http.ResponseWriter, r *http.Request) {
		user := r.URL.Query().Get("user")
		if user == "" || len(user) > maxLoginKey {
			writeError(w, http.StatusBadRequest, "user: want ?user=LOGIN")
			return
		}
		if !g.Unlock(user) {
			writeError(w, http.StatusNotFound, normLogin(user)+" is not locked")
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"unlocked": normLogin(user)})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(got))
		// Hashing first makes the compare constant-time in the length too.
		if token == "" || !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			g.log.Warn("guard: admin request refused: bad or missing token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// An error here is the client going away; nothing to tell it.
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// AdminRequest is the client side of AdminHandler for the CLI
// (`mailgate bans list|add|remove`, `mailgate unlock USER`). baseURL is
// "http://127.0.0.1:PORT" or "unix:/path/to/admin.sock"; path includes
// any query ("/bans?prefix=192.0.2.0/24"); body, if not nil, is sent as
// JSON. It returns the response body of a 2xx reply, or an error with
// the server's error text.
func AdminRequest(ctx context.Context, baseURL, token, method, path string, body any) ([]byte, error) {
	client := &http.Client{}
	url := strings.TrimSuffix(baseURL, "/") + path
	if sock, ok := strings.CutPrefix(baseURL, "unix:"); ok {
		client.Transport = &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		}
		url = "http://mailgate" + path
	}
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("guard: admin request: %w", err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, fmt.Errorf("guard: admin request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("guard: admin request: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminResponse))
	if err != nil {
		return nil, fmt.Errorf("guard: admin request: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return nil, fmt.Errorf("guard: admin request: %s: %s", resp.Status, e.Error)
	}
	return data, nil
}
