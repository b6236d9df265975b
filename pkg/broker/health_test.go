package broker

import (
	"reflect"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// The compact health a replica keeps reads back as the gateway reported
// it (times in UTC, figures to the digits a probe measures).
func TestKeptHealthReadsBack(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 890123456, time.FixedZone("CET", 3600))
	in := []api.PeerHealth{
		{Cluster: "west", Status: api.StatusConnected, RTTMillis: 1.234567, LossPercent: 12.5, LastHandshake: at,
			RxBytes: 1 << 40, TxBytes: 5, PathMTU: 1420},
		{Cluster: "north", Status: api.StatusError, Reason: "no WireGuard handshake with n1 (192.0.2.7:51820)", PathMTULost: 1420},
		{Cluster: "south", Status: api.StatusConnecting, RTTMillis: 0.087},
	}
	var kept []peerHealth
	for _, h := range in {
		kept = append(kept, compactHealth(h))
	}
	got := gatewayLive{cluster: "east", host: "gw", epoch: 3, last: at, health: kept}.status()
	want := api.GatewayStatus{ClusterID: "east", Hostname: "gw", Epoch: 3, LastHeartbeat: at, Health: append([]api.PeerHealth(nil), in...)}
	want.Health[0].LastHandshake = at.UTC()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("kept health reads back as\n%+v\nwant\n%+v", got, want)
	}
}
