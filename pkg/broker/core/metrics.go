package core

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	commitSeconds prometheus.Histogram
	batchSize     prometheus.Histogram
	conflicts     prometheus.Counter
	followed      prometheus.Counter
	replayed      prometheus.Counter
	unknown       prometheus.Counter
	collectors    []prometheus.Collector
}

func newMetrics(c *Core) *metrics {
	m := &metrics{
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
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelmesh_broker_writes_replayed_total",
			Help: "Retried writes answered from their recorded outcome instead of running again.",
		}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelmesh_broker_writes_outcome_unknown_total",
			Help: "Writes answered OutcomeUnknown (the store did not confirm in time).",
		}),
	}
	records := func(kind string, n func(*state) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "tunnelmesh_broker_records",
			Help:        "Records held, by kind.",
			ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 {
			c.state.RLock()
			defer c.state.RUnlock()
			return float64(n(c.state.st))
		})
	}
	m.collectors = []prometheus.Collector{m.commitSeconds, m.batchSize, m.conflicts, m.followed, m.replayed, m.unknown,
		records("cluster", func(s *state) int { return s.clusters.len() }),
		records("gateway", func(s *state) int { return s.gateways.len() }),
		records("export", func(s *state) int { return s.exports.len() }),
		records("token", func(s *state) int { return s.tokens.len() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tunnelmesh_broker_revision",
			Help: "Current revision of the broker's state.",
		}, func() float64 { return float64(c.Revision()) }),
	}
	return m
}

// Collectors are the core's metrics, for the broker's registry.
func (c *Core) Collectors() []prometheus.Collector { return c.metrics.collectors }
