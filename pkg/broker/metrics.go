package broker

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/core"
)

type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	watches  prometheus.Gauge
}

func newMetrics(c *core.Core) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tunnelmesh_broker_requests_total",
			Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		watches: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tunnelmesh_broker_watches_open",
			Help: "Watch streams currently open.",
		}),
	}
	m.reg.MustRegister(m.requests, m.watches, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(c.Collectors()...)
	return m
}
