package main

// `mailgate health`: the container image's HEALTHCHECK. A scratch image
// has no curl or shell, so the binary asks its own admin listener: GET
// /readyz (or /healthz with -live) and exit 0 on 200, 1 otherwise, with
// the answer's first lines on stdout (Docker keeps them in the
// container's health log).

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

const healthUsage = `Usage:
  mailgate health [-config FILE] [-url URL] [-live] [-timeout D]

Asks the running mailgate's admin listener whether it is ready (GET
/readyz; -live: GET /healthz) and exits 0 when it answers 200, 1 otherwise.
Without -url the address is admin.address from the config file; only that
key is read, so a config broken elsewhere by an edit in progress does not
make a serving mailgate look unhealthy.

Flags:
`

const (
	// defaultHealthTimeout bounds the whole request. /readyz dials the
	// backends with a 2 s timeout each, in parallel; a container
	// runtime's own healthcheck timeout should be longer than this.
	defaultHealthTimeout = 5 * time.Second
	// maxHealthBody bounds what is read of the answer: /readyz writes one
	// short line per problem.
	maxHealthBody = 4 << 10
	// maxHealthLines is how many lines of the answer are printed.
	maxHealthLines = 8
	// maxHealthConfig bounds the config file health reads; mailgate's own
	// configs are a few KiB.
	maxHealthConfig = 1 << 20
)

func runHealth(args []string, stdout, stderr io.Writer) int {
	fs, path := commandFlags("health", stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, healthUsage)
		fs.PrintDefaults()
	}
	rawURL := fs.String("url", "", "URL to GET as given (default: admin.address from the config, path /readyz or /healthz)")
	live := fs.Bool("live", false, "without -url: check liveness (/healthz) instead of readiness (/readyz)")
	timeout := fs.Duration("timeout", defaultHealthTimeout, "bound on the request")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	u := *rawURL
	if u == "" {
		data, err := readHealthConfig(*path)
		if err != nil {
			fmt.Fprintf(stderr, "mailgate: %v\n", err)
			return 1
		}
		base, err := healthBaseURL(data)
		if err != nil {
			fmt.Fprintf(stderr, "mailgate: %s: %v\n", *path, err)
			return 1
		}
		u = base + "/readyz"
		if *live {
			u = base + "/healthz"
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	code, lines, err := healthGet(ctx, u)
	if err != nil {
		fmt.Fprintf(stderr, "mailgate: health: %v\n", err)
		return 1
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	if code != http.StatusOK {
		fmt.Fprintf(stderr, "mailgate: health: %s answered %d\n", u, code)
		return 1
	}
	return 0
}

// readHealthConfig reads at most maxHealthConfig bytes of the config.
func readHealthConfig(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxHealthConfig+1))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(data) > maxHealthConfig {
		return nil, fmt.Errorf("config: %s is larger than %d bytes", path, maxHealthConfig)
	}
	return data, nil
}

// healthBaseURL finds admin.address in a config file and turns it into
// the URL this host reaches it at. Only that key is decoded, leniently:
// unknown or broken other keys are serve's and check-config's business.
func healthBaseURL(config []byte) (string, error) {
	var c struct {
		Admin struct {
			Address string `yaml:"address"`
		} `yaml:"admin"`
	}
	if err := yaml.Unmarshal(config, &c); err != nil {
		// A type error elsewhere still fills the fields it could; only
		// a file that is not YAML at all leaves nothing to go on.
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return "", fmt.Errorf("config: %w", err)
		}
	}
	a := c.Admin.Address
	if a == "" {
		a = defaultAdminAddress
	}
	return adminURL(a)
}

// healthGet GETs u and returns the status code and the answer's first
// lines, each cut to a printable length.
func healthGet(ctx context.Context, u string) (int, []string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	// No proxy from the environment: the admin listener is local.
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var lines []string
	sc := bufio.NewScanner(io.LimitReader(resp.Body, maxHealthBody))
	for sc.Scan() && len(lines) < maxHealthLines {
		l := strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return '?'
			}
			return r
		}, sc.Text())
		if len(l) > 200 {
			l = l[:200]
		}
		lines = append(lines, l)
	}
	return resp.StatusCode, lines, nil
}
