package core

import (
	"encoding/json"
	"fmt"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
)

// TokenRecord is a stored join token: its public info and the secret's hash.
type TokenRecord struct {
	api.TokenInfo
	Hash string `json:"hash"`
}

// Keys of meta records.
const (
	MetaAdminHash = "adminHash"
	metaGossipKey = "gossipKey"
	metaPolicy    = "policy"
)

// Reader reads the records. The committed state (Core.View) and a Txn
// (the committed state with the transaction's changes) are Readers.
// Records are shared: copy one before changing it.
type Reader interface {
	// Revision is the revision of the last change.
	Revision() int64
	Cluster(id string) *api.Cluster
	// Clusters copies every cluster, for the pure rules.
	Clusters() []api.Cluster
	// ClusterCount is the number of clusters.
	ClusterCount() int
	Gateway(key string) *api.Gateway
	// Gateways copies every gateway, for the pure rules.
	Gateways() []api.Gateway
	// GatewayKeys and ExportKeys list keys with prefix ("" every one,
	// "east/" cluster east's), sorted.
	GatewayKeys(prefix string) []string
	Export(key string) *api.Export
	ExportKeys(prefix string) []string
	Token(id string) *TokenRecord
	TokenIDs() []string
	// Credential is the hash of a cluster's credential.
	Credential(cluster string) (hash string, ok bool)
	// GossipKey is the clusterset's memberlist key, nil until made.
	GossipKey() []byte
	// Policy is the clusterset's policy; set is false until the admin
	// sets one (api.DefaultPolicy applies).
	Policy() (p api.Policy, set bool)
}

// records are the broker's records; the committed state holds them
// alone, a Txn holds tables over the committed ones.
type records struct {
	rev       int64
	clusters  table[*api.Cluster]
	gateways  table[*api.Gateway]
	exports   table[*api.Export]
	tokens    table[*TokenRecord]
	creds     table[string]
	gossipKey []byte
	policy    *api.Policy
}

var _ Reader = (*records)(nil)

func (r *records) Revision() int64 { return r.rev }

func (r *records) Cluster(id string) *api.Cluster { v, _ := r.clusters.get(id); return v }

func (r *records) Clusters() []api.Cluster {
	keys := r.clusters.keys("")
	out := make([]api.Cluster, 0, len(keys))
	for _, k := range keys {
		v, _ := r.clusters.get(k)
		out = append(out, *v)
	}
	return out
}

func (r *records) ClusterCount() int { return r.clusters.count() }

func (r *records) Gateway(key string) *api.Gateway { v, _ := r.gateways.get(key); return v }

func (r *records) Gateways() []api.Gateway {
	keys := r.gateways.keys("")
	out := make([]api.Gateway, 0, len(keys))
	for _, k := range keys {
		v, _ := r.gateways.get(k)
		out = append(out, *v)
	}
	return out
}

func (r *records) GatewayKeys(prefix string) []string { return r.gateways.keys(prefix) }

func (r *records) Export(key string) *api.Export { v, _ := r.exports.get(key); return v }

func (r *records) ExportKeys(prefix string) []string { return r.exports.keys(prefix) }

func (r *records) Token(id string) *TokenRecord { v, _ := r.tokens.get(id); return v }

func (r *records) TokenIDs() []string { return r.tokens.keys("") }

func (r *records) Credential(cluster string) (string, bool) { return r.creds.get(cluster) }

func (r *records) GossipKey() []byte { return r.gossipKey }

func (r *records) Policy() (api.Policy, bool) {
	if r.policy == nil {
		return api.DefaultPolicy(), false
	}
	return *r.policy, true
}

// state is the committed state: the records, the admin credential's hash
// and the recorded outcomes of idempotent writes.
type state struct {
	records
	adminHash string
	outcomes  outcomeIndex
}

func newState(rev int64) *state {
	return &state{
		records: records{rev: rev, clusters: newTable[*api.Cluster](), gateways: newTable[*api.Gateway](),
			exports: newTable[*api.Export](), tokens: newTable[*TokenRecord](), creds: newTable[string]()},
		outcomes: newOutcomeIndex(),
	}
}

func loadState(st *store.State) (*state, error) {
	s := newState(st.Revision)
	for _, kind := range store.Kinds {
		for k, v := range st.Records[kind] {
			if err := s.apply(store.Change{Kind: kind, Key: k, Value: v}); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// apply sets one stored record (a nil Value deletes it): loading, and
// changes another replica committed. The caller holds the write lock.
func (s *state) apply(ch store.Change) error {
	set, err := decodeChange(ch)
	if err != nil {
		return err
	}
	set(s)
	return nil
}

// decodeChange decodes a stored record and returns how to put it in a
// state, so that a commit is decoded whole before any of it is applied.
func decodeChange(ch store.Change) (func(*state), error) {
	switch ch.Kind {
	case store.KindCluster:
		return decoded(ch, func(s *state) map[string]*api.Cluster { return s.clusters.base })
	case store.KindGateway:
		return decoded(ch, func(s *state) map[string]*api.Gateway { return s.gateways.base })
	case store.KindExport:
		return decoded(ch, func(s *state) map[string]*api.Export { return s.exports.base })
	case store.KindToken:
		return decoded(ch, func(s *state) map[string]*TokenRecord { return s.tokens.base })
	case store.KindCredential:
		return func(s *state) {
			if ch.Value == nil {
				delete(s.creds.base, ch.Key)
			} else {
				s.creds.base[ch.Key] = string(ch.Value)
			}
		}, nil
	case store.KindOutcome:
		set, err := decodeOutcomes(ch)
		return func(s *state) { s.outcomes.set(ch.Key, set) }, err
	case store.KindMeta:
		var pol *api.Policy
		if ch.Key == metaPolicy && ch.Value != nil {
			pol = new(api.Policy)
			if err := json.Unmarshal(ch.Value, pol); err != nil {
				return nil, fmt.Errorf("decode %s %q: %w", ch.Kind, ch.Key, err)
			}
		}
		return func(s *state) {
			switch ch.Key {
			case MetaAdminHash:
				s.adminHash = string(ch.Value)
			case metaGossipKey:
				s.gossipKey = ch.Value
			case metaPolicy:
				s.policy = pol
			}
		}, nil
	}
	return func(*state) {}, nil
}

func decoded[V any](ch store.Change, m func(*state) map[string]*V) (func(*state), error) {
	if ch.Value == nil {
		return func(s *state) { delete(m(s), ch.Key) }, nil
	}
	v := new(V)
	if err := json.Unmarshal(ch.Value, v); err != nil {
		return nil, fmt.Errorf("decode %s %q: %w", ch.Kind, ch.Key, err)
	}
	return func(s *state) { m(s)[ch.Key] = v }, nil
}

// snapshot copies the watched state, sorted by key.
func (s *state) snapshot() api.Snapshot {
	return api.Snapshot{Revision: s.rev, Clusters: s.Clusters(), Gateways: s.Gateways(), Exports: s.exportList()}
}

func (s *state) exportList() []api.Export {
	keys := s.exports.keys("")
	out := make([]api.Export, 0, len(keys))
	for _, k := range keys {
		out = append(out, *s.exports.base[k])
	}
	return out
}

// AuthTable is an immutable copy of the credential hashes, replaced after
// every commit that changes one, so that requests authenticate without
// waiting for anything.
type AuthTable struct {
	AdminHash string
	// Clusters maps a cluster ID to its credential's hash.
	Clusters map[string]string
}

func newAuthTable(s *state) *AuthTable {
	t := &AuthTable{AdminHash: s.adminHash, Clusters: make(map[string]string, len(s.creds.base))}
	for k, v := range s.creds.base {
		t.Clusters[k] = v
	}
	return t
}
