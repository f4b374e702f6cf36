package admin

// The brute-force guard's API (docs/bruteforce.md), mounted under
// GuardPrefix behind the one token check:
//
//	GET    /bans               list active bans
//	POST   /bans               {"prefix": "192.0.2.0/24", "duration": "24h", "reason": "..."}
//	DELETE /bans?prefix=P      lift the ban of exactly P
//	GET    /lockouts           list locked logins
//	POST   /unlock?user=U      unlock a login (failure or compromise lockout)
//	POST   /unlock?console=C   unlock the web console account C
//
// Replies are JSON; errors are {"error": "..."}.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/mailgate/mailgate/geo"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"
	"unicode"

	"github.com/mailgate/mailgate/console"
	"github.com/mailgate/mailgate/guard"
)

// Guard API limits.
const (
	// maxBody bounds a request body; a ban request is ~100 bytes.
	maxBody = 64 << 10
	// maxBan bounds a manual ban; longer belongs in a firewall or
	// guard.deny_networks.
	maxBan = 366 * 24 * time.Hour
	// maxReason bounds the reason text that goes to logs and the state
	// file.
	maxReason = 200
	// maxUser bounds ?user=: the guard counts logins by their first 320
	// bytes, the longest address RFC 5321 4.5.3.1 allows.
	maxUser = 320
)

// BanRequest is the body of POST /guard/bans.
type BanRequest struct {
	// Prefix is a CIDR or a single address.
	Prefix string `json:"prefix"`
	// Duration is a Go duration ("1h", "90m").
	Duration string `json:"duration"`
	// Reason is shown in `mailgate bans list` and the log; default "admin".
	Reason string `json:"reason,omitempty"`
}

// parsePrefix reads one CIDR or address as the guard does for its
// config (masked, IPv4-mapped forms as IPv4, no zones).
func parsePrefix(s string) (netip.Prefix, error) {
	p, err := geo.ParseNetwork(s)
	if err != nil {
		// geo's message says what is wrong ("has host bits set; did you
		// mean 10.0.0.0/8?"), with the input quoted.
		return netip.Prefix{}, fmt.Errorf("prefix: %w", err)
	}
	return p, nil
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
		return netip.Prefix{}, 0, "", err
	}
	d, err := time.ParseDuration(r.Duration)
	if err != nil || d <= 0 || d > maxBan {
		return netip.Prefix{}, 0, "", fmt.Errorf("duration: %q is not a duration between 1s and %v", r.Duration, maxBan)
	}
	if len(r.Reason) > maxReason || strings.ContainsFunc(r.Reason, func(c rune) bool { return !unicode.IsPrint(c) }) {
		return netip.Prefix{}, 0, "", fmt.Errorf("reason: at most %d printable characters", maxReason)
	}
	if r.Reason == "" {
		r.Reason = "admin"
	}
	return p, d, r.Reason, nil
}

// guardHandler serves g's API (paths without GuardPrefix); the caller
// checks the token.
func guardHandler(g *guard.Guard) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bans", func(w http.ResponseWriter, r *http.Request) {
		bans := g.Bans()
		if bans == nil {
			bans = []guard.Ban{}
		}
		writeJSON(w, http.StatusOK, bans)
	})
	mux.HandleFunc("POST /bans", func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body: larger than %d bytes", maxBody))
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
			l = []guard.Lockout{}
		}
		writeJSON(w, http.StatusOK, l)
	})
	mux.HandleFunc("POST /unlock", func(w http.ResponseWriter, r *http.Request) {
		if name := r.URL.Query().Get("console"); name != "" {
			// A console account: its own guard key (guard.ConsoleLogin),
			// never a mail login's.
			if !console.ValidUserName(name) {
				writeError(w, http.StatusBadRequest, "console: want ?console=ACCOUNT")
				return
			}
			if !g.Unlock(guard.ConsoleLogin(name)) {
				writeError(w, http.StatusNotFound, "console account "+strings.ToLower(name)+" is not locked")
				return
			}
			writeJSON(w, http.StatusOK, map[string]string{"unlocked_console": strings.ToLower(name)})
			return
		}
		user := r.URL.Query().Get("user")
		// A NUL is in no mail login; it marks console keys, which ?console= unlocks.
		if user == "" || len(user) > maxUser || strings.ContainsRune(user, 0) {
			writeError(w, http.StatusBadRequest, "user: want ?user=LOGIN")
			return
		}
		// The guard keys logins case-folded; the reply names that key.
		if !g.Unlock(user) {
			writeError(w, http.StatusNotFound, strings.ToLower(user)+" is not locked")
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"unlocked": strings.ToLower(user)})
	})
	return mux
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
