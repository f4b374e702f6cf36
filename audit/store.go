package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	_ "modernc.org/sqlite" // the pure-Go SQLite driver, "sqlite"
)

// schema is created on first open; every statement is idempotent.
//
// logins holds the aggregates. Its unique key is the aggregation key and
// also serves the per-account queries (it starts with account, day).
// unknown records which never-seen-to-pass accounts were admitted on a
// day, for the cap on them; known holds accounts with a pass on record.
// actions is the web console's action log (AddAction), purged with the
// same retention. A database made by an older mailgate gains the new
// tables at its next open.
const schema = `
CREATE TABLE IF NOT EXISTS logins (
	id INTEGER PRIMARY KEY,
	account TEXT NOT NULL,
	day INTEGER NOT NULL,
	addr TEXT NOT NULL,
	proto TEXT NOT NULL,
	client_id TEXT NOT NULL,
	mech TEXT NOT NULL,
	result TEXT NOT NULL,
	network TEXT NOT NULL,
	country TEXT NOT NULL,
	asn TEXT NOT NULL,
	org TEXT NOT NULL,
	listener TEXT NOT NULL,
	tls TEXT NOT NULL,
	cipher TEXT NOT NULL,
	sni TEXT NOT NULL,
	cause TEXT NOT NULL,
	node TEXT NOT NULL,
	first_seen INTEGER NOT NULL,
	last_seen INTEGER NOT NULL,
	count INTEGER NOT NULL,
	UNIQUE (account, day, addr, proto, client_id, mech, result)
);
CREATE INDEX IF NOT EXISTS logins_day ON logins (day);
CREATE TABLE IF NOT EXISTS unknown (
	day INTEGER NOT NULL,
	account TEXT NOT NULL,
	PRIMARY KEY (day, account)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS known (
	account TEXT PRIMARY KEY,
	last_pass INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS actions (
	id INTEGER PRIMARY KEY,
	time INTEGER NOT NULL,
	console_user TEXT NOT NULL,
	remote TEXT NOT NULL,
	what TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_time ON actions (time);
`

// Options are what the process gives the store besides its config.
type Options struct {
	// DefaultDomain is the policy's default_domain, so accounts are
	// normalized as the policy normalizes them.
	DefaultDomain string
	// Node names this mailgate when Config.Node is empty.
	Node string
	// Logger receives write errors; nil discards them.
	Logger *slog.Logger
	// Registerer receives the store's metrics; nil registers none.
	Registerer prometheus.Registerer
	// afterBatch, in tests, is called after each committed batch with the
	// number of events it held.
	afterBatch func(events int)
	// now, in tests, replaces time.Now for retention.
	now func() time.Time
}

// Store is an open audit database. Record, Close and the queries are
// safe for concurrent use.
type Store struct {
	cfg  Config
	opts Options
	db   *sql.DB
	log  *slog.Logger
	m    *metrics

	queue chan Event
	flush chan chan struct{}
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

	knownMu sync.Mutex
	known   map[string]struct{} // accounts with a pass on record
}

// Open opens (creating when needed) the database at cfg.Path for writing
// and starts the writer. The caller must Close it.
func Open(cfg Config, o Options) (*Store, error) {
	cfg = cfg.WithDefaults()
	if cfg.Path == "" {
		return nil, errors.New("audit: no path")
	}
	// Create the file readable by its owner only: it names accounts and
	// their addresses. SQLite gives the -wal and -shm files its mode.
	f, err := os.OpenFile(cfg.Path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	f.Close()
	db, err := sql.Open("sqlite", dsn(cfg.Path, false))
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	// One connection: the writer goroutine is the only writer, and the
	// in-process queries queue behind it briefly.
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("audit: %s: %w", cfg.Path, err)
	}
	if o.Node == "" {
		o.Node, _ = os.Hostname()
	}
	if cfg.Node != "" {
		o.Node = cfg.Node
	}
	if o.now == nil {
		o.now = time.Now
	}
	s := &Store{
		cfg: cfg, opts: o, db: db, log: o.Logger,
		queue: make(chan Event, cfg.Queue), flush: make(chan chan struct{}),
		stop: make(chan struct{}), done: make(chan struct{}),
		known: map[string]struct{}{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := s.loadKnown(); err != nil {
		db.Close()
		return nil, fmt.Errorf("audit: %s: %w", cfg.Path, err)
	}
	s.m = newMetrics(s, o.Registerer)
	go s.run()
	return s, nil
}

// OpenReader opens the database read-only, for `mailgate audit` while
// mailgate writes it (WAL lets readers and the writer go on together).
func OpenReader(path string) (*Store, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	db, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("audit: %s: %w", path, err)
	}
	done := make(chan struct{})
	close(done) // no writer
	return &Store{db: db, done: done, stop: make(chan struct{})}, nil
}

// dsn is the driver's connection string. WAL: readers never block the
// writer. synchronous=NORMAL: in WAL mode a crash of the process loses
// nothing committed and the file stays consistent; only a power loss may
// lose the last transactions. busy_timeout: a reader that meets a
// checkpoint waits instead of failing.
func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	if readOnly {
		q.Set("mode", "ro")
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(NORMAL)")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

func (s *Store) loadKnown() error {
	rows, err := s.db.Query(`SELECT account FROM known`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return err
		}
		s.known[a] = struct{}{}
	}
	return rows.Err()
}

// Record queues one decision for writing. It never blocks: when the
// queue is full the decision is dropped and counted
// (mailgate_audit_dropped_total).
func (s *Store) Record(e Event) {
	select {
	case s.queue <- e:
	default:
		s.m.dropped.Inc()
	}
}

// Flush returns once every decision queued before the call is written
// (or lost to a logged error).
func (s *Store) Flush() {
	ch := make(chan struct{})
	select {
	case s.flush <- ch:
		<-ch
	case <-s.done:
	}
}

// Close writes what is queued, stops the writer and closes the database.
func (s *Store) Close() error {
	s.once.Do(func() { close(s.stop) })
	if s.queue != nil {
		<-s.done
	}
	return s.db.Close()
}

// DB gives tests and benchmarks the database handle.
func (s *Store) DB() *sql.DB { return s.db }

// purgeEvery is how often the retention purge runs; purgeChunk bounds
// the rows one purge statement deletes, so the writer is never held long.
const (
	purgeEvery = time.Hour
	purgeChunk = 5000
)

// run is the writer: it collects queued decisions into batches and
// writes each in one transaction, and purges expired rows.
func (s *Store) run() {
	defer close(s.done)
	batch := make([]Event, 0, s.cfg.BatchRows)
	var timer *time.Timer
	var due <-chan time.Time
	flush := func() {
		if timer != nil {
			timer.Stop()
			timer, due = nil, nil
		}
		if len(batch) == 0 {
			return
		}
		s.writeBatch(batch)
		clear(batch)
		batch = batch[:0]
	}
	// drain writes everything queued now.
	drain := func() {
		for {
			select {
			case e := <-s.queue:
				batch = append(batch, e)
				if len(batch) >= s.cfg.BatchRows {
					flush()
				}
				continue
			default:
			}
			flush()
			return
		}
	}
	purge := time.NewTicker(purgeEvery)
	defer purge.Stop()
	s.purgeLogged()
	for {
		select {
		case e := <-s.queue:
			batch = append(batch, e)
			if len(batch) == 1 {
				timer = time.NewTimer(s.cfg.BatchInterval)
				due = timer.C
			}
			if len(batch) >= s.cfg.BatchRows {
				flush()
			}
		case <-due:
			flush()
		case <-purge.C:
			flush()
			s.purgeLogged()
		case ch := <-s.flush:
			drain()
			close(ch)
		case <-s.stop:
			drain()
			return
		}
	}
}

func (s *Store) purgeLogged() {
	if n, err := s.Purge(context.Background()); err != nil {
		s.log.Error("audit: retention purge failed", "err", err)
	} else if n > 0 {
		s.log.Info("audit: retention purge", "rows", n)
	}
}

// Purge deletes the rows older than the retention period, in chunks, and
// returns how many it deleted. The writer runs it hourly.
func (s *Store) Purge(ctx context.Context) (int64, error) {
	cutoff := day(s.opts.now().Add(-s.cfg.Retention))
	var total int64
	for {
		r, err := s.db.ExecContext(ctx, `DELETE FROM logins WHERE id IN
			(SELECT id FROM logins WHERE day < ? LIMIT ?)`, cutoff, purgeChunk)
		if err != nil {
			return total, err
		}
		n, _ := r.RowsAffected()
		total += n
		if n < purgeChunk {
			break
		}
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM unknown WHERE day < ?`, cutoff); err != nil {
		return total, err
	}
	cutSec := s.opts.now().Add(-s.cfg.Retention).Unix()
	if _, err := s.db.ExecContext(ctx, `DELETE FROM actions WHERE time < ?`, s.opts.now().Add(-s.cfg.Retention).UnixMilli()); err != nil {
		return total, err
	}
	rows, err := s.db.QueryContext(ctx, `DELETE FROM known WHERE last_pass < ? RETURNING account`, cutSec)
	if err != nil {
		return total, err
	}
	defer rows.Close()
	s.knownMu.Lock()
	defer s.knownMu.Unlock()
	for rows.Next() {
		var a string
		if rows.Scan(&a) == nil {
			delete(s.known, a)
		}
	}
	if s.m != nil {
		s.m.purged.Add(float64(total))
	}
	return total, rows.Err()
}

// day is the UTC day number of t, the unit rows aggregate over.
func day(t time.Time) int64 { return t.Unix() / 86400 }
