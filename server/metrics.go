package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus series. Each server has its own
// registry so that tests can run several servers in one process.
type metrics struct {
	reg      *prometheus.Registry
	sealed   prometheus.Gauge
	issued   *prometheus.CounterVec
	revoked  prometheus.Counter
	ocsp     prometheus.Counter
	requests *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		sealed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sigil_sealed", Help: "1 while the server is sealed or uninitialised, 0 when unsealed.",
		}),
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_certificates_issued_total", Help: "Certificates issued through the admin API, by profile.",
		}, []string{"profile"}),
		revoked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_certificates_revoked_total", Help: "Certificates revoked.",
		}),
		ocsp: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_ocsp_responses_total", Help: "OCSP responses served.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_http_requests_total", Help: "HTTP requests by listener and status code class.",
		}, []string{"listener", "code"}),
	}
	m.sealed.Set(1)
	m.reg.MustRegister(m.sealed, m.issued, m.revoked, m.ocsp, m.requests,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
