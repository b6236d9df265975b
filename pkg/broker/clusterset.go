package broker

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/core"
)

// gossipKeySize: memberlist's AES-256 key.
const gossipKeySize = 32

// handleClusterSet answers what all members share (the gossip key) to any
// member's credential or the admin. The key is made on first request, in a
// transaction: replicas racing to make it end with the one that committed,
// and a broker restored from backup keeps it. It lives in the store's
// private records, never in the watched state or its log.
func (b *Broker) handleClusterSet(w http.ResponseWriter, r *http.Request) {
	if _, err := b.authenticate(r); err != nil {
		b.writeError(w, r, err)
		return
	}
	var key []byte
	b.core.View(func(s core.Reader) { key = s.GossipKey() })
	if key == nil {
		k := make([]byte, gossipKeySize)
		if _, err := rand.Read(k); err != nil {
			b.writeError(w, r, err)
			return
		}
		_, err := b.core.Do(r.Context(), core.Write{Op: func(t *core.Txn) (core.Result, error) {
			if key = t.GossipKey(); key != nil { // made meanwhile, here or on another replica
				return noContent, nil
			}
			t.PutGossipKey(k)
			key = k
			return noContent, nil
		}})
		if err != nil {
			b.writeError(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, api.ClusterSet{GossipKey: base64.StdEncoding.EncodeToString(key)})
}
