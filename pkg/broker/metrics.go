package broker

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/core"
)

type metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec
	watches    prometheus.Gauge
	healthShed prometheus.Counter
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
		healthShed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelmesh_broker_heartbeat_health_unread_total",
			Help: "Heartbeats taken as a sign of life only, their health report not read: the broker was too busy decoding others.",
		}),
	}
	m.reg.MustRegister(m.requests, m.watches, m.healthShed, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(c.Collectors()...)
	return m
}
