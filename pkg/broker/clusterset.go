package broker

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
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
	b.mu.RLock()
	key := b.st.gossipKey
	b.mu.RUnlock()
	if key == nil {
		err := b.do(r.Context(), func(t *txn) error {
			if t.s.gossipKey != nil { // made meanwhile, here or on another replica
				key = t.s.gossipKey
				return nil
			}
			k := make([]byte, gossipKeySize)
			if _, err := rand.Read(k); err != nil {
				return err
			}
			t.putGossipKey(k)
			key = k
			return nil
		})
		if err != nil {
			b.writeError(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, api.ClusterSet{GossipKey: base64.StdEncoding.EncodeToString(key)})
}
