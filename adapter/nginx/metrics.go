package nginx

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the adapter's own collectors; cmd creates them once and
// hands the same pointer to every Handler, so they survive reloads. A
// nil *Metrics records nothing.
//
// Labels are bounded: protocol is imap, pop3, smtp or "" (a request
// refused before its protocol was read); result is pass, authfailed,
// authlocked, countryfailed, unavailable (decisions, as
// mailgate_logins_total), unsupported (an Auth-Method without a
// password), bad_request (a request nginx would not send) or
// unauthorized (without the shared secret).
type Metrics struct {
	requests *prometheus.CounterVec   // protocol, result
	seconds  *prometheus.HistogramVec // result
}

// NewMetrics creates the metrics and registers them on reg; call it
// once per registry.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_nginx_auth_requests_total",
			Help: "nginx auth_http requests by protocol and result (pass, authfailed, authlocked, countryfailed, unavailable, unsupported, bad_request, unauthorized).",
		}, []string{"protocol", "result"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mailgate_nginx_auth_seconds",
			Help:    "Time to answer an nginx auth_http request by result, tarpit and failure delay included.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"result"}),
	}
	reg.MustRegister(m.requests, m.seconds)
	return m
}

func (m *Metrics) request(proto, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(proto, result).Inc()
	m.seconds.WithLabelValues(result).Observe(d.Seconds())
}

// Unauthorized counts a request refused for a missing or wrong secret
// (adapter.Secret answers it).
func (m *Metrics) Unauthorized() {
	if m == nil {
		return
	}
	m.requests.WithLabelValues("", "unauthorized").Inc()
}
