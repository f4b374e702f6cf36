package audit

import (
	"os"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the store's Prometheus metrics (docs/audit.md, "Metrics").
type metrics struct {
	written      prometheus.Counter
	dropped      prometheus.Counter
	writeErrors  prometheus.Counter
	purged       prometheus.Counter
	folded       *prometheus.CounterVec
	batchSeconds prometheus.Histogram
}

func newMetrics(s *Store, reg prometheus.Registerer) *metrics {
	m := &metrics{
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailgate_audit_events_written_total",
			Help: "Login decisions written to the audit database.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailgate_audit_dropped_total",
			Help: "Login decisions not recorded because the audit queue was full.",
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailgate_audit_write_errors_total",
			Help: "Audit batches lost to a database error (the log says which).",
		}),
		purged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailgate_audit_purged_rows_total",
			Help: "Audit rows deleted by the retention purge.",
		}),
		folded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_audit_folded_total",
			Help: "Audit rows folded into an (other) row by a cap: failed_rows or pass_rows (per account and day) or unknown_accounts (per day).",
		}, []string{"cap"}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mailgate_audit_batch_seconds",
			Help:    "Time to write one audit batch (one transaction).",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5},
		}),
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.written, m.dropped, m.writeErrors, m.purged, m.folded, m.batchSeconds,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mailgate_audit_database_bytes",
			Help: "Size of the audit database on disk, with its write-ahead log.",
		}, func() float64 {
			var n int64
			for _, p := range []string{s.cfg.Path, s.cfg.Path + "-wal"} {
				if fi, err := os.Stat(p); err == nil {
					n += fi.Size()
				}
			}
			return float64(n)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mailgate_audit_queue_length",
			Help: "Login decisions waiting for the audit writer.",
		}, func() float64 { return float64(len(s.queue)) }),
	)
	return m
}
