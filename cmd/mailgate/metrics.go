package main

// The Prometheus registry and the metrics cmd owns: reloads, geo
// database build dates and staleness, certificate expiry, build info.
// The proxy's own metrics (logins, decisions, splices, ...) are
// proxy.Metrics, created here once and handed to every proxy.Options so
// they survive reloads.

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/geo"
	"github.com/mailgate/mailgate/proxy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// opsMetrics is one gateway's registry and cmd-level metrics.
type opsMetrics struct {
	reg        *prometheus.Registry
	proxy      *proxy.Metrics
	reloadOK   prometheus.Gauge
	reloadTime prometheus.Gauge
	reloads    *prometheus.CounterVec // result: success, failure
	// lastLoad is the last configuration load, for the console.
	lastLoad atomic.Pointer[loadResult]
}

// loadResult is one configuration load (start-up or reload).
type loadResult struct {
	at  time.Time
	err error
}

// newOpsMetrics registers every metric on a fresh registry. g.cur must
// be set before the first scrape: the state collector reads it at each.
func newOpsMetrics(g *gateway) *opsMetrics {
	reg := prometheus.NewRegistry()
	m := &opsMetrics{
		reg:   reg,
		proxy: proxy.NewMetrics(reg),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailgate_config_last_reload_successful",
			Help: "1 if the last configuration load (start-up or SIGHUP) succeeded, 0 if the old state was kept.",
		}),
		reloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailgate_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful configuration load.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_config_reloads_total",
			Help: "SIGHUP reloads by result (success, failure).",
		}, []string{"result"}),
	}
	m.reloadOK.Set(1)
	m.reloadTime.SetToCurrentTime()
	m.lastLoad.Store(&loadResult{at: time.Now()})
	reg.MustRegister(m.reloadOK, m.reloadTime, m.reloads,
		&stateCollector{g: g},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// reloaded records the outcome of a SIGHUP reload.
func (m *opsMetrics) reloaded(err error) {
	m.lastLoad.Store(&loadResult{at: time.Now(), err: err})
	if err != nil {
		m.reloadOK.Set(0)
		m.reloads.WithLabelValues("failure").Inc()
		return
	}
	m.reloadOK.Set(1)
	m.reloadTime.SetToCurrentTime()
	m.reloads.WithLabelValues("success").Inc()
}

// stateCollector reports values read from the gateway's current state at
// scrape time, so they follow reloads and certificate renewals.
type stateCollector struct{ g *gateway }

var (
	descGeoBuilt = prometheus.NewDesc("mailgate_geo_database_build_timestamp_seconds",
		"Build date the loaded geo database states, as Unix time.", []string{"database", "type"}, nil)
	descGeoStale = prometheus.NewDesc("mailgate_geo_database_stale",
		"1 when the loaded geo database was built longer ago than geo_update.max_age.", []string{"database"}, nil)
	descCertExpiry = prometheus.NewDesc("mailgate_certificate_expiry_timestamp_seconds",
		"NotAfter of each served certificate, as Unix time.", []string{"certificate"}, nil)
	descBuildInfo = prometheus.NewDesc("mailgate_build_info",
		"Always 1; labels name the running build.", []string{"version", "revision", "goversion"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descGeoBuilt
	ch <- descGeoStale
	ch <- descCertExpiry
	ch <- descBuildInfo
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.g.current()
	now := time.Now()
	for _, in := range st.geo.Info() {
		if in.Built.IsZero() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descGeoBuilt, prometheus.GaugeValue,
			float64(in.Built.Unix()), in.Name, in.Type)
		stale := 0.0
		if isStale(in.Built, st.cfg.GeoUpdate.MaxAge, now) {
			stale = 1
		}
		ch <- prometheus.MustNewConstMetric(descGeoStale, prometheus.GaugeValue, stale, in.Name)
	}
	for name, t := range c.g.tm.Expiry() {
		ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, float64(t.Unix()), name)
	}
	b := currentBuild()
	ch <- prometheus.MustNewConstMetric(descBuildInfo, prometheus.GaugeValue, 1, b.Version, b.Revision, b.GoVersion)
}

// isStale reports whether a database built at built is older than maxAge.
// The embedded database counts too: it is as old as the binary's data.
func isStale(built time.Time, maxAge time.Duration, now time.Time) bool {
	return maxAge > 0 && !built.IsZero() && now.Sub(built) > maxAge
}

// warnStaleGeo logs one warning per loaded database older than maxAge;
// called at start-up, after each reload and daily.
func warnStaleGeo(log *slog.Logger, st *state) {
	now := time.Now()
	for _, in := range st.geo.Info() {
		if isStale(in.Built, st.cfg.GeoUpdate.MaxAge, now) {
			msg := "geo database is older than geo_update.max_age; run `mailgate geo update`"
			if in.File == geo.EmbeddedName {
				msg = "the embedded geo database is older than geo_update.max_age; list a maintained database in geo.databases"
			}
			log.Warn(msg,
				"database", in.Name, "built", in.Built.Format(time.DateOnly),
				"age", now.Sub(in.Built).Round(time.Hour), "max_age", st.cfg.GeoUpdate.MaxAge)
		}
	}
}
