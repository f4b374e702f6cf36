package audit

import (
	"context"
	"fmt"
	"time"
)

// Row is one aggregate as the queries return it (and `mailgate audit
// --json` prints it).
type Row struct {
	Account   string    `json:"account"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Count     int64     `json:"count"`
	Result    string    `json:"result"`
	Cause     string    `json:"cause"`
	Addr      string    `json:"address"`
	Network   string    `json:"network"`
	Country   string    `json:"country"`
	ASN       string    `json:"asn"`
	Org       string    `json:"org"`
	Protocol  string    `json:"protocol"`
	Listener  string    `json:"listener"`
	Mech      string    `json:"mechanism"`
	ClientID  string    `json:"client_id"`
	TLS       string    `json:"tls_version"`
	Cipher    string    `json:"tls_cipher"`
	SNI       string    `json:"sni"`
	Node      string    `json:"node"`
}

// Query selects an account's history.
type Query struct {
	Account string    // normalized as the store normalizes it
	Since   time.Time // rows last seen at or after Since
	Failed  bool      // only refused attempts (every result but pass)
	Limit   int       // at most this many rows; 0: 1000
}

// History returns an account's rows, newest first.
func (s *Store) History(ctx context.Context, q Query) ([]Row, error) {
	if q.Limit <= 0 {
		q.Limit = 1000
	}
	// day >= lets the query use the unique key's (account, day) prefix.
	where := `account = ? AND day >= ? AND last_seen >= ?`
	args := []any{q.Account, day(q.Since), q.Since.Unix()}
	if q.Failed {
		where += ` AND result <> ?`
		args = append(args, ResultPass)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT account, first_seen, last_seen, count, result, cause, addr,
		network, country, asn, org, proto, listener, mech, client_id, tls, cipher, sni, node
		FROM logins WHERE `+where+` ORDER BY last_seen DESC, id DESC LIMIT ?`, append(args, q.Limit)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		var r Row
		var first, last int64
		if err := rows.Scan(&r.Account, &first, &last, &r.Count, &r.Result, &r.Cause, &r.Addr,
			&r.Network, &r.Country, &r.ASN, &r.Org, &r.Protocol, &r.Listener, &r.Mech, &r.ClientID,
			&r.TLS, &r.Cipher, &r.SNI, &r.Node); err != nil {
			return nil, err
		}
		r.FirstSeen, r.LastSeen = time.Unix(first, 0).UTC(), time.Unix(last, 0).UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

// TopRow is one line of a --top listing: refused attempts grouped by
// account, source address or country.
type TopRow struct {
	Key       string `json:"key"`
	Failures  int64  `json:"failures"`
	Accounts  int64  `json:"accounts"`
	Sources   int64  `json:"sources"`
	Countries int64  `json:"countries"`
}

// Top groupings.
var topColumn = map[string]string{"accounts": "account", "sources": "addr", "countries": "country"}

// Top returns the most refused accounts, sources or countries since a
// time, most failures first.
func (s *Store) Top(ctx context.Context, by string, since time.Time, limit int) ([]TopRow, error) {
	col, ok := topColumn[by]
	if !ok {
		return nil, fmt.Errorf("audit: --top %q is not one of accounts, sources, countries", by)
	}
	if limit <= 0 {
		limit = 20
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+col+`, sum(count) AS n, count(DISTINCT account),
		count(DISTINCT addr), count(DISTINCT country)
		FROM logins WHERE day >= ? AND last_seen >= ? AND result <> ?
		GROUP BY `+col+` ORDER BY n DESC, `+col+` LIMIT ?`, day(since), since.Unix(), ResultPass, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []TopRow
	for rows.Next() {
		var r TopRow
		if err := rows.Scan(&r.Key, &r.Failures, &r.Accounts, &r.Sources, &r.Countries); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Countries returns the distinct countries (or geo labels) of an
// account's passed logins since a time, in order of first use: what the
// guard's compromise signal ("too many countries for one login") needs,
// read from the history so it survives restarts.
func (s *Store) Countries(ctx context.Context, account string, since time.Time) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT country FROM logins
		WHERE account = ? AND day >= ? AND last_seen >= ? AND result = ? AND country <> ''
		GROUP BY country ORDER BY min(first_seen), country`, account, day(since), since.Unix(), ResultPass)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// LoginCountries is Countries for a login as a client typed it: the
// account key is made as Record makes it (Normalize with the store's
// default domain, then cleaned), so the guard can ask with its own login.
func (s *Store) LoginCountries(ctx context.Context, login string, since time.Time) ([]string, error) {
	return s.Countries(ctx, clean(Normalize(login, s.opts.DefaultDomain), maxAccount), since)
}

// Stats are the database's totals.
type Stats struct {
	Rows   int64 // aggregate rows
	Events int64 // decisions they count
}

// Stats counts the rows and the decisions they hold.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := s.db.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(count), 0) FROM logins`).Scan(&st.Rows, &st.Events)
	return st, err
}

// ParseSince reads a --since value: a Go duration ("36h", "90m") or a
// whole number of days or weeks ("7d", "2w"), and returns the time that
// long before now.
func ParseSince(s string, now time.Time) (time.Time, error) {
	d, err := parseSpan(s)
	if err != nil {
		return time.Time{}, err
	}
	return now.Add(-d), nil
}

// maxSpan bounds --since: ten years is all any retention keeps.
const maxSpan = 10 * 366 * 24 * time.Hour

func parseSpan(s string) (time.Duration, error) {
	bad := fmt.Errorf("--since %q: want a duration like 24h, 7d or 2w", s)
	if n := len(s); n >= 2 && (s[n-1] == 'd' || s[n-1] == 'w') {
		var v int64
		for _, c := range s[:n-1] {
			if c < '0' || c > '9' || v > int64(maxSpan/time.Hour) {
				return 0, bad
			}
			v = v*10 + int64(c-'0')
		}
		unit := 24 * time.Hour
		if s[n-1] == 'w' {
			unit *= 7
		}
		if v > int64(maxSpan/unit) {
			return 0, bad
		}
		return time.Duration(v) * unit, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > maxSpan {
		return 0, bad
	}
	return d, nil
}
