package gateway

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

var (
	descConnections = prometheus.NewDesc("tunnelmesh_gateway_connections",
		"Connections to remote clusters by status.", []string{"status"}, nil)
	descStatus = prometheus.NewDesc("tunnelmesh_gateway_connection_status",
		"1 for the current status of the connection to a remote cluster.", []string{"cluster", "status"}, nil)
	descRTT = prometheus.NewDesc("tunnelmesh_gateway_connection_rtt_seconds",
		"Round-trip time of the latest health probe through the tunnel.", []string{"cluster"}, nil)
	descLoss = prometheus.NewDesc("tunnelmesh_gateway_connection_probe_loss_ratio",
		"Share of the last 10 health probes that got no reply.", []string{"cluster"}, nil)
	descRx = prometheus.NewDesc("tunnelmesh_gateway_rx_bytes_total",
		"Bytes received from a remote cluster's gateway.", []string{"cluster"}, nil)
	descTx = prometheus.NewDesc("tunnelmesh_gateway_tx_bytes_total",
		"Bytes sent to a remote cluster's gateway.", []string{"cluster"}, nil)
	descRefused = prometheus.NewDesc("tunnelmesh_gateway_refused_cidrs",
		"Remote CIDRs refused because they cover this gateway's underlay, a peer's endpoint or the broker.", []string{"cluster"}, nil)
	descProblems = prometheus.NewDesc("tunnelmesh_gateway_problems",
		"Remote clusters, CIDRs or routes currently left out of the data plane (the gateway log says why).", nil, nil)
	descApplies = prometheus.NewDesc("tunnelmesh_gateway_dataplane_applies_total",
		"Times the engine set the data plane (only when peers, routes or the firewall change).", nil, nil)
	descHandshake = prometheus.NewDesc("tunnelmesh_gateway_last_handshake_age_seconds",
		"Seconds since the last WireGuard handshake with a remote cluster (absent before the first).", []string{"cluster"}, nil)
)

// Collector exposes the engine's health as Prometheus metrics.
type Collector struct{ e *Engine }

// Collector returns a prometheus.Collector over the engine's latest health.
func (e *Engine) Collector() prometheus.Collector { return Collector{e} }

func (Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnections, descStatus, descRTT, descLoss, descRx, descTx, descHandshake, descRefused, descProblems, descApplies} {
		ch <- d
	}
}

func (c Collector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	count := map[string]int{api.StatusConnecting: 0, api.StatusConnected: 0, api.StatusError: 0}
	for _, h := range c.e.Health() {
		count[h.Status]++
		ch <- prometheus.MustNewConstMetric(descStatus, prometheus.GaugeValue, 1, h.Cluster, h.Status)
		ch <- prometheus.MustNewConstMetric(descRTT, prometheus.GaugeValue, h.RTTMillis/1000, h.Cluster)
		ch <- prometheus.MustNewConstMetric(descLoss, prometheus.GaugeValue, h.LossPercent/100, h.Cluster)
		ch <- prometheus.MustNewConstMetric(descRx, prometheus.CounterValue, float64(h.RxBytes), h.Cluster)
		ch <- prometheus.MustNewConstMetric(descTx, prometheus.CounterValue, float64(h.TxBytes), h.Cluster)
		if !h.LastHandshake.IsZero() {
			ch <- prometheus.MustNewConstMetric(descHandshake, prometheus.GaugeValue, now.Sub(h.LastHandshake).Seconds(), h.Cluster)
		}
	}
	refused := map[string]int{}
	for _, r := range c.e.Refused() {
		refused[r.Cluster]++
	}
	for cl, n := range refused {
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.GaugeValue, float64(n), cl)
	}
	ch <- prometheus.MustNewConstMetric(descProblems, prometheus.GaugeValue, float64(len(c.e.Problems())))
	ch <- prometheus.MustNewConstMetric(descApplies, prometheus.CounterValue, float64(c.e.Applies()))
	for s, n := range count {
		ch <- prometheus.MustNewConstMetric(descConnections, prometheus.GaugeValue, float64(n), s)
	}
}
