package gossip

import (
	"fmt"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// MaxEpochLead bounds a gossiped epoch: at most this many failovers ahead
// of the newest epoch the broker's records give the cluster. Each failover
// adds one, so it is never reached in a real outage; it keeps an entry
// within the broker's reach once the broker speaks again.
const MaxEpochLead = 1024

// Trust is what the broker last said of a cluster: the WireGuard public
// keys of its gateways and the newest epoch among them.
type Trust struct {
	Keys  []wgtypes.Key
	Epoch int64
}

// TrustOf reads cluster id's Trust from a broker snapshot; ok is false when
// the snapshot does not list the cluster or gives it no usable key. Pure.
func TrustOf(snap api.Snapshot, id string) (Trust, bool) {
	member := false
	for _, c := range snap.Clusters {
		member = member || c.ID == id
	}
	if !member {
		return Trust{}, false
	}
	var t Trust
	for _, g := range snap.Gateways {
		if g.ClusterID != id {
			continue
		}
		t.Epoch = max(t.Epoch, g.Epoch)
		if k, err := wgtypes.ParseKey(g.PublicKey); err == nil {
			t.Keys = append(t.Keys, k)
		}
	}
	return t, len(t.Keys) > 0
}

// Check verifies g against t: signed with one of t's keys, its epoch
// within MaxEpochLead of t's. It returns the key that verified it.
func (t Trust) Check(g Gateway) (wgtypes.Key, error) {
	if g.Epoch > t.Epoch+MaxEpochLead {
		return wgtypes.Key{}, fmt.Errorf("cluster %s announced epoch %d, more than %d above the broker's %d", g.ClusterID, g.Epoch, MaxEpochLead, t.Epoch)
	}
	msg := g.payload()
	for _, k := range t.Keys {
		if verify(k, msg, g.Sig) {
			return k, nil
		}
	}
	return wgtypes.Key{}, fmt.Errorf("cluster %s: the announcement is not signed with the cluster's WireGuard key as the broker knows it", g.ClusterID)
}
