package gateway

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
)

func TestAssess(t *testing.T) {
	now := time.Unix(10000, 0)
	p := RemotePeer{Cluster: "b", Gateway: "b1", Peer: wg.Peer{Endpoint: netip.MustParseAddrPort("192.0.2.2:51820")}}
	tests := []struct {
		name      string
		peer      RemotePeer
		r         result
		hs        time.Time
		tunnel    bool
		status    string
		reason    string
		rtt, loss float64
	}{
		{name: "no tunnel IP yet", peer: p, r: result{FirstSeen: now}, status: api.StatusConnecting, reason: "tunnel IP"},
		{name: "fresh reply", peer: p, tunnel: true, hs: now.Add(-time.Minute),
			r:      result{RTT: 1500 * time.Microsecond, Loss: 0.1, LastReply: now.Add(-ProbeInterval), FirstSeen: now.Add(-time.Hour)},
			status: api.StatusConnected, rtt: 1.5, loss: 10},
		{name: "just added", peer: p, tunnel: true, r: result{FirstSeen: now.Add(-5 * time.Second)}, status: api.StatusConnecting, reason: "first probe"},
		{name: "never a handshake", peer: p, tunnel: true, r: result{FirstSeen: now.Add(-time.Minute), Loss: 1},
			status: api.StatusError, reason: "no WireGuard handshake with b1 (192.0.2.2:51820)", loss: 100},
		{name: "handshake but probes lost", peer: p, tunnel: true, hs: now.Add(-10 * time.Second),
			r:      result{RTT: time.Millisecond, LastReply: now.Add(-20 * time.Second), FirstSeen: now.Add(-time.Hour), Loss: 1},
			status: api.StatusError, reason: "probes unanswered", rtt: 1, loss: 100},
		// A dead remote cluster must leave the imports within seconds: the
		// tunnel is down once probes go unanswered for ProbeDownAfter.
		{name: "probes unanswered for a second and more: down", peer: p, tunnel: true, hs: now.Add(-10 * time.Second),
			r:      result{RTT: time.Millisecond, LastReply: now.Add(-ProbeDownAfter - 50*time.Millisecond), FirstSeen: now.Add(-time.Hour), Loss: 0.4},
			status: api.StatusError, reason: "probes unanswered", rtt: 1, loss: 40},
		{name: "a reply within ProbeDownAfter: connected", peer: p, tunnel: true, hs: now.Add(-10 * time.Second),
			r:      result{RTT: time.Millisecond, LastReply: now.Add(-ProbeDownAfter + 50*time.Millisecond), FirstSeen: now.Add(-time.Hour), Loss: 0.3},
			status: api.StatusConnected, rtt: 1, loss: 30},
		{name: "stale remote noted", peer: func() RemotePeer { q := p; q.Stale = true; return q }(), tunnel: true,
			r: result{FirstSeen: now.Add(-time.Hour)}, status: api.StatusError, reason: "stale"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := assess(tc.peer, tc.r, wg.PeerStats{LastHandshake: tc.hs, RxBytes: 7, TxBytes: 9}, tc.tunnel, now)
			if h.Status != tc.status || !strings.Contains(h.Reason, tc.reason) {
				t.Errorf("got %s %q, want %s %q", h.Status, h.Reason, tc.status, tc.reason)
			}
			if h.RTTMillis != tc.rtt || h.LossPercent != tc.loss || h.RxBytes != 7 || h.TxBytes != 9 || h.Cluster != "b" {
				t.Errorf("figures %+v", h)
			}
		})
	}
}

func TestHealthFlipped(t *testing.T) {
	h := func(kv ...string) []api.PeerHealth {
		var out []api.PeerHealth
		for i := 0; i < len(kv); i += 2 {
			out = append(out, api.PeerHealth{Cluster: kv[i], Status: kv[i+1], RTTMillis: float64(i)})
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		old, cur []api.PeerHealth
		want     bool
	}{
		{"same", h("a", api.StatusConnected, "b", api.StatusError), h("b", api.StatusError, "a", api.StatusConnected), false},
		{"figures only", h("a", api.StatusConnected), []api.PeerHealth{{Cluster: "a", Status: api.StatusConnected, RTTMillis: 9, LossPercent: 10}}, false},
		{"down", h("a", api.StatusConnected), h("a", api.StatusError), true},
		{"up", h("a", api.StatusError), h("a", api.StatusConnected), true},
		{"a link added", h("a", api.StatusConnected), h("a", api.StatusConnected, "b", api.StatusConnecting), true},
		{"a link replaced", h("a", api.StatusConnected), h("b", api.StatusConnected), true},
		{"first assessment", nil, h("a", api.StatusConnecting), true},
	} {
		if got := healthFlipped(tc.old, tc.cur); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
