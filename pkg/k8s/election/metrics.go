package election

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons, as metric labels, for taking the Lease and for stepping down.
const (
	reasonNoLease    = "no_lease"
	reasonReleased   = "released"
	reasonOwnTenure  = "own_ended_tenure"
	reasonHolderDead = "holder_dead"
	reasonExpired    = "expired"
	reasonRewritten  = "rewritten" // the holder rewrote a deleted or rolled-back Lease

	reasonLost          = "lease_lost"
	reasonRenewDeadline = "renew_deadline"
	reasonForbidden     = "forbidden"
)

var (
	descActive = prometheus.NewDesc("tunnelmesh_gateway_election_active",
		"1 while this candidate holds the cluster's gateway Lease.", nil, nil)
	descEpoch = prometheus.NewDesc("tunnelmesh_gateway_election_epoch",
		"The cluster's current gateway epoch as this candidate last saw it.", nil, nil)
	descAcquired = prometheus.NewDesc("tunnelmesh_gateway_election_acquisitions_total",
		"Times this candidate took the Lease, by why it could.", []string{"reason"}, nil)
	descSteppedDown = prometheus.NewDesc("tunnelmesh_gateway_election_stepdowns_total",
		"Times this candidate gave up the active role other than by Release, by why.", []string{"reason"}, nil)
	descHolding = prometheus.NewDesc("tunnelmesh_gateway_election_holding_without_apiserver",
		"1 while this candidate keeps the active role through an apiserver outage (no renewal possible, no other candidate able to take over).", nil, nil)
	descAlive = prometheus.NewDesc("tunnelmesh_gateway_election_candidates_alive",
		"Gateway candidates memberlist sees alive, this one included.", nil, nil)
	descNotReady = prometheus.NewDesc("tunnelmesh_gateway_election_candidates_not_ready",
		"Labelled gateway candidates memberlist does not see alive (their gateway down or restarting, or 7947 blocked): a failover waits for them.", nil, nil)
)

type metrics struct {
	mu          sync.Mutex
	last        State
	acquired    map[string]float64
	steppedDown map[string]float64
	holding     gauge
}

// gauge is a float set from the election loop and read by Collect.
type gauge struct {
	mu sync.Mutex
	v  float64
}

func (g *gauge) Set(v float64) { g.mu.Lock(); g.v = v; g.mu.Unlock() }
func (g *gauge) get() float64  { g.mu.Lock(); defer g.mu.Unlock(); return g.v }

func newMetrics() *metrics {
	return &metrics{acquired: map[string]float64{}, steppedDown: map[string]float64{}}
}

func (m *metrics) state(s State) {
	m.mu.Lock()
	m.last = s
	m.mu.Unlock()
}

func (m *metrics) acquiredFor(reason string) {
	m.mu.Lock()
	m.acquired[reason]++
	m.mu.Unlock()
}

func (m *metrics) stepDown(reason string) {
	m.mu.Lock()
	m.steppedDown[reason]++
	m.mu.Unlock()
}

// Collector exposes this candidate's election as Prometheus metrics.
func (e *Elector) Collector() prometheus.Collector { return collector{e} }

type collector struct{ e *Elector }

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descActive, descEpoch, descAcquired, descSteppedDown, descHolding, descAlive, descNotReady} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	m := c.e.metrics
	m.mu.Lock()
	defer m.mu.Unlock()
	active := 0.0
	if m.last.Role == Active {
		active = 1
	}
	ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, active)
	ch <- prometheus.MustNewConstMetric(descEpoch, prometheus.GaugeValue, float64(m.last.Epoch))
	for r, n := range m.acquired {
		ch <- prometheus.MustNewConstMetric(descAcquired, prometheus.CounterValue, n, r)
	}
	for r, n := range m.steppedDown {
		ch <- prometheus.MustNewConstMetric(descSteppedDown, prometheus.CounterValue, n, r)
	}
	ch <- prometheus.MustNewConstMetric(descHolding, prometheus.GaugeValue, m.holding.get())
	ch <- prometheus.MustNewConstMetric(descAlive, prometheus.GaugeValue, float64(len(c.e.members.alive())))
	notReady := 0
	for _, cand := range c.e.Candidates() {
		if !cand.Ready {
			notReady++
		}
	}
	ch <- prometheus.MustNewConstMetric(descNotReady, prometheus.GaugeValue, float64(notReady))
}
