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
}

const metaAdminHash = "adminHash"

func gatewayKey(cluster, host string) string { return cluster + "/" + host }
func exportKey(cluster, ns, name string) string {
	return cluster + "/" + ns + "/" + name
}

func loadState(st *store.State) (*state, error) {
	s := &state{
		rev:      st.Revision,
		clusters: map[string]*api.Cluster{},
		gateways: map[string]*api.Gateway{},
		exports:  map[string]*api.Export{},
		tokens:   map[string]*tokenRecord{},
		creds:    map[string]string{},
	}
	for k, v := range st.Records[store.KindCluster] {
		var c api.Cluster
		if err := json.Unmarshal(v, &c); err != nil {
			return nil, fmt.Errorf("decode cluster %q: %w", k, err)
		}
		s.clusters[k] = &c
	}
	for k, v := range st.Records[store.KindGateway] {
		var g api.Gateway
		if err := json.Unmarshal(v, &g); err != nil {
			return nil, fmt.Errorf("decode gateway %q: %w", k, err)
		}
		s.gateways[k] = &g
	}
	for k, v := range st.Records[store.KindExport] {
		var e api.Export
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("decode export %q: %w", k, err)
		}
		s.exports[k] = &e
	}
	for k, v := range st.Records[store.KindToken] {
		var t tokenRecord
		if err := json.Unmarshal(v, &t); err != nil {
			return nil, fmt.Errorf("decode token %q: %w", k, err)
		}
		s.tokens[k] = &t
	}
	for k, v := range st.Records[store.KindCredential] {
		s.creds[k] = string(v)
	}
	s.adminHash = string(st.Records[store.KindMeta][metaAdminHash])
	return s, nil
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
// watched kind takes the next revision.
type txn struct {
	s       *state
	changes []store.Change
	events  []logEntry
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
	t.s.clusters[c.ID] = c
	cp := *c
	t.watched(store.KindCluster, c.ID, c, api.Event{Type: api.EventPut, Cluster: &cp})
}

func (t *txn) deleteCluster(id string) {
	delete(t.s.clusters, id)
	t.watched(store.KindCluster, id, nil, api.Event{Type: api.EventDelete})
}

func (t *txn) putGateway(g *api.Gateway) {
	k := gatewayKey(g.ClusterID, g.Hostname)
	t.s.gateways[k] = g
	cp := *g
	t.watched(store.KindGateway, k, g, api.Event{Type: api.EventPut, Gateway: &cp})
}

func (t *txn) deleteGateway(k string) {
	delete(t.s.gateways, k)
	t.watched(store.KindGateway, k, nil, api.Event{Type: api.EventDelete})
}

func (t *txn) putExport(e *api.Export) {
	k := exportKey(e.ClusterID, e.Namespace, e.Name)
	t.s.exports[k] = e
	cp := *e
	t.watched(store.KindExport, k, e, api.Event{Type: api.EventPut, Export: &cp})
}

func (t *txn) deleteExport(k string) {
	delete(t.s.exports, k)
	t.watched(store.KindExport, k, nil, api.Event{Type: api.EventDelete})
}

func (t *txn) putToken(tr *tokenRecord) {
	t.s.tokens[tr.ID] = tr
	b, _ := json.Marshal(tr)
	t.private(store.KindToken, tr.ID, b)
}

func (t *txn) putCred(cluster, hash string) {
	t.s.creds[cluster] = hash
	t.private(store.KindCredential, cluster, []byte(hash))
}

func (t *txn) deleteCred(cluster string) {
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
