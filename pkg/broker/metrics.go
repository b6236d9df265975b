package broker

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	reg           *prometheus.Registry
	requests      *prometheus.CounterVec
	watches       prometheus.Gauge
	commitSeconds prometheus.Histogram
	batchSize     prometheus.Histogram
	conflicts     prometheus.Counter
	followed      prometheus.Counter
}

func newMetrics(b *Broker) *metrics {
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
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tunnelmesh_broker_commit_seconds",
			Help:    "Time to make one batch of writes durable.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tunnelmesh_broker_commit_batch_writes",
			Help:    "Write requests sharing one commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelmesh_broker_commit_conflicts_total",
			Help: "Commits refused because another replica committed first (then re-validated and retried).",
		}),
		followed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelmesh_broker_followed_commits_total",
			Help: "Commits of other replicas applied to this replica's state.",
		}),
	}
	records := func(kind string, n func(*state) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "tunnelmesh_broker_records",
			Help:        "Records held, by kind.",
			ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 {
			b.mu.RLock()
			defer b.mu.RUnlock()
			return float64(n(b.st))
		})
	}
	m.reg.MustRegister(m.requests, m.watches, m.commitSeconds, m.batchSize, m.conflicts, m.followed,
		records("cluster", func(s *state) int { return len(s.clusters) }),
		records("gateway", func(s *state) int { return len(s.gateways) }),
		records("export", func(s *state) int { return len(s.exports) }),
		records("token", func(s *state) int { return len(s.tokens) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tunnelmesh_broker_revision",
			Help: "Current revision of the broker's state.",
		}, func() float64 { return float64(b.Revision()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}
