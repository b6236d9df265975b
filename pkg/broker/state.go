package broker

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
)

// tokenRecord is a stored join token: its public info and the secret's hash.
type tokenRecord struct {
	api.TokenInfo
	Hash string `json:"hash"`
}

// state is the broker's whole working set, rebuilt from the Store at start.
type state struct {
	rev       int64
	clusters  map[string]*api.Cluster
	gateways  map[string]*api.Gateway // key: cluster/hostname
	exports   map[string]*api.Export  // key: cluster/namespace/name
	tokens    map[string]*tokenRecord
	creds     map[string]string // cluster ID -> credential hash
	adminHash string
	gossipKey []byte // the clusterset's memberlist key; nil until first asked for
}

const (
	metaAdminHash = "adminHash"
	metaGossipKey = "gossipKey"
)

func loadState(st *store.State) (*state, error) {
	s := &state{
		rev:      st.Revision,
		clusters: map[string]*api.Cluster{},
		gateways: map[string]*api.Gateway{},
		exports:  map[string]*api.Export{},
		tokens:   map[string]*tokenRecord{},
		creds:    map[string]string{},
	}
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
// changes another replica committed.
func (s *state) apply(ch store.Change) error {
	switch ch.Kind {
	case store.KindCluster:
		return setDecoded(s.clusters, ch)
	case store.KindGateway:
		return setDecoded(s.gateways, ch)
	case store.KindExport:
		return setDecoded(s.exports, ch)
	case store.KindToken:
		return setDecoded(s.tokens, ch)
	case store.KindCredential:
		if ch.Value == nil {
			delete(s.creds, ch.Key)
		} else {
			s.creds[ch.Key] = string(ch.Value)
		}
	case store.KindMeta:
		switch ch.Key {
		case metaAdminHash:
			s.adminHash = string(ch.Value)
		case metaGossipKey:
			s.gossipKey = ch.Value
		}
	}
	return nil
}

func setDecoded[V any](m map[string]*V, ch store.Change) error {
	if ch.Value == nil {
		delete(m, ch.Key)
		return nil
	}
	v := new(V)
	if err := json.Unmarshal(ch.Value, v); err != nil {
		return fmt.Errorf("decode %s %q: %w", ch.Kind, ch.Key, err)
	}
	m[ch.Key] = v
	return nil
}

// snapshot copies the watched state, sorted by key.
func (s *state) snapshot() api.Snapshot {
	snap := api.Snapshot{
		Revision: s.rev,
		Clusters: make([]api.Cluster, 0, len(s.clusters)),
		Gateways: make([]api.Gateway, 0, len(s.gateways)),
		Exports:  make([]api.Export, 0, len(s.exports)),
	}
	for _, k := range sortedKeys(s.clusters) {
		snap.Clusters = append(snap.Clusters, *s.clusters[k])
	}
	for _, k := range sortedKeys(s.gateways) {
		snap.Gateways = append(snap.Gateways, *s.gateways[k])
	}
	for _, k := range sortedKeys(s.exports) {
		snap.Exports = append(snap.Exports, *s.exports[k])
	}
	return snap
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// clusterList and gatewayList copy the records for the pure rules.
func (s *state) clusterList() []api.Cluster {
	out := make([]api.Cluster, 0, len(s.clusters))
	for _, c := range s.clusters {
		out = append(out, *c)
	}
	return out
}

func (s *state) gatewayList() []api.Gateway {
	out := make([]api.Gateway, 0, len(s.gateways))
	for _, g := range s.gateways {
		out = append(out, *g)
	}
	return out
}

// clusterGateways returns the keys of a cluster's gateways.
func (s *state) clusterGateways(cluster string) []string {
	var out []string
	for k := range s.gateways {
		if strings.HasPrefix(k, cluster+"/") {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func (s *state) clusterExports(cluster string) []string {
	var out []string
	for k := range s.exports {
		if strings.HasPrefix(k, cluster+"/") {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// txn records the changes one batch makes to the state. Each change to a
// watched kind takes the next revision. It can undo them (rollback), for
// a commit another replica won or one too large for the store.
type txn struct {
	s       *state
	changes []store.Change
	events  []logEntry
	undo    []func()
}

// txnMark is a point a txn can roll back to.
type txnMark struct {
	rev                   int64
	changes, events, undo int
}

func (t *txn) mark() txnMark {
	return txnMark{rev: t.s.rev, changes: len(t.changes), events: len(t.events), undo: len(t.undo)}
}

// rollback restores the state as it was at m.
func (t *txn) rollback(m txnMark) {
	for i := len(t.undo) - 1; i >= m.undo; i-- {
		t.undo[i]()
	}
	t.undo, t.changes, t.events = t.undo[:m.undo], t.changes[:m.changes], t.events[:m.events]
	t.s.rev = m.rev
}

// saveOld records how to put back m[k] as it is now.
func saveOld[V any](t *txn, m map[string]V, k string) {
	old, had := m[k]
	t.undo = append(t.undo, func() {
		if had {
			m[k] = old
		} else {
			delete(m, k)
		}
	})
}

func (t *txn) watched(kind, key string, v any, ev api.Event) {
	t.s.rev++
	ch := store.Change{Revision: t.s.rev, Kind: kind, Key: key}
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			panic(fmt.Sprintf("marshal %s %s: %v", kind, key, err)) // api types always marshal
		}
		ch.Value = b
	}
	t.changes = append(t.changes, ch)
	ev.Revision = t.s.rev
	ev.Kind = kind
	ev.Key = key
	t.events = append(t.events, newLogEntry(ev))
}

func (t *txn) private(kind, key string, v []byte) {
	t.changes = append(t.changes, store.Change{Kind: kind, Key: key, Value: v})
}

func (t *txn) putCluster(c *api.Cluster) {
	saveOld(t, t.s.clusters, c.ID)
	t.s.clusters[c.ID] = c
	cp := *c
	t.watched(store.KindCluster, c.ID, c, api.Event{Type: api.EventPut, Cluster: &cp})
}

func (t *txn) deleteCluster(id string) {
	saveOld(t, t.s.clusters, id)
	delete(t.s.clusters, id)
	t.watched(store.KindCluster, id, nil, api.Event{Type: api.EventDelete})
}

func (t *txn) putGateway(g *api.Gateway) {
	k := api.GatewayKey(g.ClusterID, g.Hostname)
	saveOld(t, t.s.gateways, k)
	t.s.gateways[k] = g
	cp := *g
	t.watched(store.KindGateway, k, g, api.Event{Type: api.EventPut, Gateway: &cp})
}

func (t *txn) deleteGateway(k string) {
	saveOld(t, t.s.gateways, k)
	delete(t.s.gateways, k)
	t.watched(store.KindGateway, k, nil, api.Event{Type: api.EventDelete})
}

func (t *txn) putExport(e *api.Export) {
	k := api.ExportKey(e.ClusterID, e.Namespace, e.Name)
	saveOld(t, t.s.exports, k)
	t.s.exports[k] = e
	cp := *e
	t.watched(store.KindExport, k, e, api.Event{Type: api.EventPut, Export: &cp})
}

func (t *txn) deleteExport(k string) {
	saveOld(t, t.s.exports, k)
	delete(t.s.exports, k)
	t.watched(store.KindExport, k, nil, api.Event{Type: api.EventDelete})
}

func (t *txn) putToken(tr *tokenRecord) {
	saveOld(t, t.s.tokens, tr.ID)
	t.s.tokens[tr.ID] = tr
	b, _ := json.Marshal(tr)
	t.private(store.KindToken, tr.ID, b)
}

func (t *txn) putCred(cluster, hash string) {
	saveOld(t, t.s.creds, cluster)
	t.s.creds[cluster] = hash
	t.private(store.KindCredential, cluster, []byte(hash))
}

func (t *txn) putGossipKey(k []byte) {
	old := t.s.gossipKey
	t.undo = append(t.undo, func() { t.s.gossipKey = old })
	t.s.gossipKey = k
	t.private(store.KindMeta, metaGossipKey, k)
}

func (t *txn) deleteCred(cluster string) {
	saveOld(t, t.s.creds, cluster)
	delete(t.s.creds, cluster)
	t.private(store.KindCredential, cluster, nil)
}

// logEntry is one retained change, encoded once for every watcher.
type logEntry struct {
	rev  int64
	line []byte // JSON of api.Event plus '\n'
}

func newLogEntry(ev api.Event) logEntry {
	b, err := json.Marshal(ev)
	if err != nil {
		panic(fmt.Sprintf("marshal event: %v", err))
	}
	return logEntry{rev: ev.Revision, line: append(b, '\n')}
}

// logEntryFromChange rebuilds a watch event from a stored change.
func logEntryFromChange(ch store.Change) (logEntry, error) {
	ev := api.Event{Type: api.EventPut, Revision: ch.Revision, Kind: ch.Kind, Key: ch.Key}
	if ch.Value == nil {
		ev.Type = api.EventDelete
		return newLogEntry(ev), nil
	}
	var err error
	switch ch.Kind {
	case store.KindCluster:
		ev.Cluster = new(api.Cluster)
		err = json.Unmarshal(ch.Value, ev.Cluster)
	case store.KindGateway:
		ev.Gateway = new(api.Gateway)
		err = json.Unmarshal(ch.Value, ev.Gateway)
	case store.KindExport:
		ev.Export = new(api.Export)
		err = json.Unmarshal(ch.Value, ev.Export)
	default:
		err = fmt.Errorf("unexpected kind %q in log", ch.Kind)
	}
	if err != nil {
		return logEntry{}, fmt.Errorf("log entry %d: %w", ch.Revision, err)
	}
	return newLogEntry(ev), nil
}
