package broker

import (
	"strconv"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/core"
)

// gatewayLive is one gateway's liveness and health as this replica keeps
// them (api.GatewayStatus, with the health compact).
type gatewayLive struct {
	cluster, host string
	epoch         int64
	last          time.Time
	health        []peerHealth
}

// peerHealth is api.PeerHealth as kept: every replica keeps one per peer
// per gateway, a million for a thousand clusters, so it takes 64 bytes
// instead of 120 — the cluster ID shared with the cluster's record, the
// status as a number, the reason only when there is one, the handshake as
// Unix nanoseconds, RTT and loss in 32 bits (more digits than a probe
// measures) and MTUs in 16.
type peerHealth struct {
	cluster      string
	reason       *string
	handshake    int64 // Unix nanoseconds; 0: none
	rx, tx       int64
	rtt, loss    float32
	mtu, mtuLost uint16
	status       uint8
}

// statuses are the health statuses by their number in peerHealth.
var statuses = [...]string{api.StatusConnecting, api.StatusConnected, api.StatusError}

// keepHealth is what the broker keeps of cluster's validated health
// report: one entry per other cluster that exists (the first; reports
// about invented clusters are dropped), in an exact-size slice.
func (b *Broker) keepHealth(cluster string, hs []api.PeerHealth) []peerHealth {
	out := make([]peerHealth, 0, len(hs))
	seen := make(map[string]bool, len(hs))
	b.core.View(func(s core.Reader) {
		for _, h := range hs {
			c := s.Cluster(h.Cluster)
			if c == nil || c.ID == cluster || seen[c.ID] {
				continue
			}
			seen[c.ID] = true
			h.Cluster = c.ID // shared with the record
			out = append(out, compactHealth(h))
		}
	})
	if len(out) < cap(out) {
		out = append([]peerHealth(nil), out...)
	}
	return out
}

// compactHealth is h as kept (h validated: figures in range).
func compactHealth(h api.PeerHealth) peerHealth {
	p := peerHealth{cluster: h.Cluster, rx: h.RxBytes, tx: h.TxBytes, rtt: float32(h.RTTMillis), loss: float32(h.LossPercent),
		mtu: uint16(h.PathMTU), mtuLost: uint16(h.PathMTULost)}
	for i, st := range statuses {
		if h.Status == st {
			p.status = uint8(i)
		}
	}
	if h.Reason != "" {
		r := h.Reason
		p.reason = &r
	}
	if !h.LastHandshake.IsZero() {
		p.handshake = h.LastHandshake.UnixNano()
	}
	return p
}

// status is the kept liveness as the API reports it.
func (g gatewayLive) status() api.GatewayStatus {
	s := api.GatewayStatus{ClusterID: g.cluster, Hostname: g.host, Epoch: g.epoch, LastHeartbeat: g.last}
	if len(g.health) > 0 {
		s.Health = make([]api.PeerHealth, len(g.health))
	}
	for i, p := range g.health {
		h := api.PeerHealth{Cluster: p.cluster, Status: statuses[p.status], RTTMillis: float64From32(p.rtt),
			LossPercent: float64From32(p.loss), RxBytes: p.rx, TxBytes: p.tx, PathMTU: int(p.mtu), PathMTULost: int(p.mtuLost)}
		if p.reason != nil {
			h.Reason = *p.reason
		}
		if p.handshake != 0 {
			h.LastHandshake = time.Unix(0, p.handshake).UTC()
		}
		s.Health[i] = h
	}
	return s
}

// float64From32 is f with the digits a float32 holds (1.234567, not
// 1.2345670461654663).
func float64From32(f float32) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'g', -1, 32), 64)
	return v
}
