package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// maxResponse bounds what Request reads: max_tracked bans at ~150 bytes
// each.
const maxResponse = 64 << 20

// Request is the CLI's client of the admin listener (`mailgate bans
// list|add|remove`, `mailgate unlock USER`). baseURL is
// "http://127.0.0.1:PORT" or "unix:/path/to/admin.sock"; path includes any
// query ("/guard/bans?prefix=192.0.2.0/24"); body, if not nil, is sent as
// JSON. It returns the response body of a 2xx reply, or an error with the
// server's error text.
func Request(ctx context.Context, baseURL, token, method, path string, body any) ([]byte, error) {
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
			return nil, fmt.Errorf("admin request: %w", err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, fmt.Errorf("admin request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin request: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("admin request: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return nil, fmt.Errorf("admin request: %s: %s", resp.Status, e.Error)
	}
	return data, nil
}
