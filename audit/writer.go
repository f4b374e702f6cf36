package audit

import (
	"context"
	"database/sql"
	"time"
)

// Field bounds: what a row keeps of each text. Account names are at most
// 320 octets (RFC 5321 4.5.3.1); the rest are short by nature.
const (
	maxAccount = 320
	maxShort   = 64
	maxLong    = 255
)

// key is the aggregation key of a row.
type key struct {
	account string
	day     int64
	addr    string
	proto   string
	client  string
	mech    string
	result  string
}

// row is one aggregate about to be written.
type row struct {
	key
	network, country, asn, org, listener, tls, cipher, sni, cause string
	first, last                                                   int64
	count                                                         int64
}

// toRow normalizes and bounds an event into a one-event row.
func (s *Store) toRow(e Event) *row {
	t := e.Time
	if t.IsZero() {
		t = time.Now()
	}
	addr, network := Other, ""
	if e.Addr.IsValid() {
		n := Network(e.Addr)
		network = n.String()
		addr = e.Addr.Unmap().String()
		if s.cfg.NetworkOnly {
			addr = network
		}
	}
	return &row{
		key: key{
			account: clean(Normalize(e.Account, s.opts.DefaultDomain), maxAccount),
			day:     day(t),
			addr:    addr,
			proto:   clean(e.Protocol, maxShort),
			client:  clean(e.ClientID, maxShort),
			mech:    clean(e.Mech, maxShort),
			result:  clean(e.Result, maxShort),
		},
		network:  network,
		country:  clean(e.Country, maxShort),
		asn:      clean(e.ASN, maxShort),
		org:      clean(e.Org, maxLong),
		listener: clean(e.Listener, maxShort),
		tls:      clean(e.TLS, maxShort),
		cipher:   clean(e.Cipher, maxShort),
		sni:      clean(e.SNI, maxLong),
		cause:    clean(e.Cause, maxLong),
		first:    t.Unix(),
		last:     t.Unix(),
		count:    1,
	}
}

// merge adds o (same key) into r: counts add up, the seen times widen,
// and the descriptive fields are the latest event's.
func (r *row) merge(o *row) {
	r.count += o.count
	r.first = min(r.first, o.first)
	if o.last >= r.last {
		r.last = o.last
		r.network, r.country, r.asn, r.org = o.network, o.country, o.asn, o.org
		r.listener, r.tls, r.cipher, r.sni, r.cause = o.listener, o.tls, o.cipher, o.sni, o.cause
	}
}

// writeBatch aggregates a batch in memory and writes it in one
// transaction. An error loses the batch (counted and logged), never
// anything before it.
func (s *Store) writeBatch(evs []Event) {
	agg := make(map[key]*row, len(evs))
	var order []*row
	for _, e := range evs {
		r := s.toRow(e)
		if a, ok := agg[r.key]; ok {
			a.merge(r)
			continue
		}
		agg[r.key] = r
		order = append(order, r)
	}
	start := time.Now()
	if err := s.writeRows(order); err != nil {
		s.m.writeErrors.Inc()
		s.log.Error("audit: batch lost", "events", len(evs), "err", err)
		return
	}
	s.m.written.Add(float64(len(evs)))
	s.m.batchSeconds.Observe(time.Since(start).Seconds())
	if s.opts.afterBatch != nil {
		s.opts.afterBatch(len(evs))
	}
}

func (s *Store) writeRows(rows []*row) error {
	ctx := context.Background()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var passed []string
	for _, r := range rows {
		if err := s.put(ctx, tx, r); err != nil {
			return err
		}
		if r.result == ResultPass {
			passed = append(passed, r.account)
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.knownMu.Lock()
	for _, a := range passed {
		s.known[a] = struct{}{}
	}
	s.knownMu.Unlock()
	return nil
}

// put writes one aggregate, applying the caps (docs/audit.md, "Bounds"):
// a pass is always written and makes its account known (an account's
// new pass rows on one day are capped like its refusals); a refusal for an
// account never seen to pass counts against the day's unknown accounts
// (beyond the cap it becomes account "(other)"); and an account's new
// refusal rows on one day are capped (beyond it they fold into the
// "(other)" address row).
func (s *Store) put(ctx context.Context, tx *sql.Tx, r *row) error {
	if r.result == ResultPass {
		if _, err := tx.ExecContext(ctx, `INSERT INTO known (account, last_pass) VALUES (?, ?)
			ON CONFLICT (account) DO UPDATE SET last_pass = max(last_pass, excluded.last_pass)`, r.account, r.last); err != nil {
			return err
		}
		// The client ID and mechanism are the client's choice: an
		// account's own scripted logins must not add a row each.
		if ok, err := s.update(ctx, tx, r); ok || err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM logins WHERE account = ? AND day = ? AND result = ?`,
			r.account, r.day, ResultPass).Scan(&n); err != nil {
			return err
		}
		if n >= s.cfg.MaxFailedRows {
			s.m.folded.WithLabelValues("pass_rows").Inc()
			r.addr, r.network, r.client, r.mech = Other, "", "", ""
		}
		return s.upsert(ctx, tx, r)
	}
	if ok, err := s.update(ctx, tx, r); ok || err != nil {
		return err
	}
	limit := s.cfg.MaxFailedRows
	if !s.isKnown(r.account) && r.account != Other {
		in, err := s.admitUnknown(ctx, tx, r.day, r.account)
		if err != nil {
			return err
		}
		if in {
			limit = s.cfg.MaxUnknownRows
		} else {
			s.m.folded.WithLabelValues("unknown_accounts").Inc()
			r.account = Other
			if ok, err := s.update(ctx, tx, r); ok || err != nil {
				return err
			}
		}
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM logins WHERE account = ? AND day = ? AND result <> ?`,
		r.account, r.day, ResultPass).Scan(&n); err != nil {
		return err
	}
	if n >= limit {
		s.m.folded.WithLabelValues("failed_rows").Inc()
		r.addr, r.network, r.client, r.mech = Other, "", "", ""
	}
	return s.upsert(ctx, tx, r)
}

func (s *Store) isKnown(account string) bool {
	s.knownMu.Lock()
	defer s.knownMu.Unlock()
	_, ok := s.known[account]
	return ok
}

// admitUnknown reports whether an unknown account has (or now gets) a
// place among the day's MaxUnknownAccounts.
func (s *Store) admitUnknown(ctx context.Context, tx *sql.Tx, day int64, account string) (bool, error) {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM unknown WHERE day = ? AND account = ?`, day, account).Scan(&one)
	if err == nil {
		return true, nil
	}
	if err != sql.ErrNoRows {
		return false, err
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM unknown WHERE day = ?`, day).Scan(&n); err != nil {
		return false, err
	}
	if n >= s.cfg.MaxUnknownAccounts {
		return false, nil
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO unknown (day, account) VALUES (?, ?)`, day, account)
	return err == nil, err
}

// update adds r to its existing row and reports whether there was one.
func (s *Store) update(ctx context.Context, tx *sql.Tx, r *row) (bool, error) {
	res, err := tx.ExecContext(ctx, `UPDATE logins SET count = count + ?,
		first_seen = min(first_seen, ?), last_seen = max(last_seen, ?),
		network = ?, country = ?, asn = ?, org = ?, listener = ?, tls = ?, cipher = ?, sni = ?, cause = ?, node = ?
		WHERE account = ? AND day = ? AND addr = ? AND proto = ? AND client_id = ? AND mech = ? AND result = ?`,
		r.count, r.first, r.last,
		r.network, r.country, r.asn, r.org, r.listener, r.tls, r.cipher, r.sni, r.cause, s.opts.Node,
		r.account, r.day, r.addr, r.proto, r.client, r.mech, r.result)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// upsert inserts r or adds it to its existing row.
func (s *Store) upsert(ctx context.Context, tx *sql.Tx, r *row) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO logins (account, day, addr, proto, client_id, mech, result,
		network, country, asn, org, listener, tls, cipher, sni, cause, node, first_seen, last_seen, count)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (account, day, addr, proto, client_id, mech, result) DO UPDATE SET
		count = count + excluded.count, first_seen = min(first_seen, excluded.first_seen),
		last_seen = max(last_seen, excluded.last_seen), network = excluded.network, country = excluded.country,
		asn = excluded.asn, org = excluded.org, listener = excluded.listener, tls = excluded.tls,
		cipher = excluded.cipher, sni = excluded.sni, cause = excluded.cause, node = excluded.node`,
		r.account, r.day, r.addr, r.proto, r.client, r.mech, r.result,
		r.network, r.country, r.asn, r.org, r.listener, r.tls, r.cipher, r.sni, r.cause, s.opts.Node,
		r.first, r.last, r.count)
	return err
}
