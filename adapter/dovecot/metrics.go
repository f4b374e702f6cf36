package dovecot

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the adapter's own counters, registered once by cmd.
// A nil *Metrics counts nothing.
type Metrics struct {
	requests *prometheus.CounterVec // command, result
	parked   prometheus.Gauge
	ended    *prometheus.CounterVec // why a parked attempt ended unreported
}

// NewMetrics registers the adapter's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_dovecot_policy_requests_total",
			Help: "Dovecot auth_policy requests by command (allow, report, other) and result: allow: accept, tarpit, reject, invalid; report: success, failure, policy_reject, invalid; any: unauthorized (no or a wrong secret), bad_method, bad_command (each answered -1).",
		}, []string{"command", "result"}),
		parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailgate_dovecot_policy_parked",
			Help: "Allowed Dovecot logins waiting for their report.",
		}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_dovecot_policy_abandoned_total",
			Help: "Allowed Dovecot logins ended without their report, by reason: lease (no report in time), full (the table was full: the source holding the most gave way, or a newcomer found only privileged attempts), replaced (the same attempt allowed again).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.requests, m.parked, m.ended)
	return m
}

func (m *Metrics) request(command, result string) {
	if m != nil {
		m.requests.WithLabelValues(command, result).Inc()
	}
}

func (m *Metrics) setParked(n int) {
	if m != nil {
		m.parked.Set(float64(n))
	}
}

func (m *Metrics) abandoned(reason string, n int) {
	if m != nil && n > 0 {
		m.ended.WithLabelValues(reason).Add(float64(n))
	}
}
