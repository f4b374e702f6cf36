package fleet

import "github.com/prometheus/client_golang/prometheus"

// metrics are the store's Prometheus metrics (docs/operations.md#metrics).
type metrics struct {
	seconds  *prometheus.HistogramVec
	ops      *prometheus.CounterVec
	errors   *prometheus.CounterVec
	feed     prometheus.Counter
	reloads  prometheus.Counter
	unsynced prometheus.Counter
	// wakeDenied: wake-ups the store refused to publish.
	wakeDenied prometheus.Counter
}

func newMetrics(s *Store, reg prometheus.Registerer) *metrics {
	m := &metrics{
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mailgate_shared_state_seconds",
			Help:    "Round-trip time of one call to the shared store, by operation (begin, finish, renew, ban, lift, unlock, lockouts, feed, reload).",
			Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .05, .25, 1},
		}, []string{"op"}),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_shared_state_ops_total",
			Help: "Calls to the shared store, by operation.",
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_shared_state_errors_total",
			Help: "Calls to the shared store that failed, by operation.",
		}, []string{"op"}),
		feed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailgate_shared_state_feed_changes_total",
			Help: "Bans and lifts read from the shared store's change feed into the local copy.",
		}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailgate_shared_state_reloads_total",
			Help: "Full reloads of the ban list from the shared store (start, return of the store, feed trimmed past the last change seen).",
		}),
		unsynced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailgate_shared_state_handed_over_total",
			Help: "Bans this node handed to the store after losing it that the store did not have (made while it was down, or lost by it).",
		}),
		wakeDenied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailgate_shared_state_wake_denied_total",
			Help: "Wake-ups the shared store refused to publish (the store user lacks +zmscore or +publish); this node's waits poll meanwhile.",
		}),
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.seconds, m.ops, m.errors, m.feed, m.reloads, m.unsynced, m.wakeDenied,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mailgate_shared_state_up",
			Help: "1 when the shared store (guard.shared) answers, 0 while this node decides on its own state.",
		}, func() float64 {
			if s.Up() {
				return 1
			}
			return 0
		}))
	return m
}
