package core

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
)

// Txn is one transaction: the writes of a batch applied on top of the
// committed state, which stays untouched until the store confirms the
// commit. Each change to a watched kind takes the next revision.
type Txn struct {
	records
	base     *state
	limit    int // changes one commit may carry; 0: no limit
	maxBytes int // bytes of changes one commit may carry (store.ChangeBytes); 0: no limit
	bytes    int

	changes   []store.Change
	events    []logEntry
	undo      []func()
	outcomes  []*outcome // answers recorded by this transaction's writes
	pruned    map[string]bool
	gossip    bool // gossipKey set
	policySet bool

	// cur is the write running; next holds the continuations of writes
	// that need more transactions (Continue).
	cur  *request
	next map[*request]func(*Txn) error
}

func newTxn(s *state, limit, maxBytes int) *Txn {
	return &Txn{
		records: records{rev: s.rev, clusters: s.clusters.on(), gateways: s.gateways.on(), exports: s.exports.on(),
			tokens: s.tokens.on(), creds: s.creds.on(), gossipKey: s.gossipKey, policy: s.policy},
		base: s, limit: limit, maxBytes: maxBytes, pruned: map[string]bool{}, next: map[*request]func(*Txn) error{},
	}
}

// Room is how many more changes fit in this transaction. A write too large
// for one transaction does what fits and continues in the next (Continue).
func (t *Txn) Room() int {
	if t.limit <= 0 {
		return math.MaxInt32
	}
	return max(0, t.limit-len(t.changes)-1) // one for the record of the answers
}

// size counts the changes the commit carries, the outcome record included.
func (t *Txn) size() int {
	n := len(t.changes)
	if len(t.outcomes) > 0 {
		n++
	}
	return n
}

// full reports whether the transaction carries more than a commit may.
func (t *Txn) full() bool {
	if t.limit > 0 && t.size() > t.limit {
		return true
	}
	if t.maxBytes > 0 {
		n := t.bytes
		for _, o := range t.outcomes {
			n += len(o.Sealed)*4/3 + len(o.Route) + 256
		}
		return n > t.maxBytes
	}
	return false
}

// Continue makes the running write go on in the next transaction with fn,
// after this one commits; the write is answered when its last
// continuation has run. A write whose first part committed keeps its
// answer even if a continuation fails: a continuation must be safe to
// finish later (the broker's sweep finishes what is left).
func (t *Txn) Continue(fn func(*Txn) error) { t.next[t.cur] = fn }

// mark is a point a transaction can roll back to.
type mark struct {
	rev                                    int64
	changes, events, undo, outcomes, bytes int
}

func (t *Txn) mark() mark {
	return mark{rev: t.rev, changes: len(t.changes), events: len(t.events), undo: len(t.undo), outcomes: len(t.outcomes), bytes: t.bytes}
}

// rollback undoes everything after m.
func (t *Txn) rollback(m mark) {
	for i := len(t.undo) - 1; i >= m.undo; i-- {
		t.undo[i]()
	}
	t.undo, t.changes, t.events, t.outcomes = t.undo[:m.undo], t.changes[:m.changes], t.events[:m.events], t.outcomes[:m.outcomes]
	t.rev, t.bytes = m.rev, m.bytes
}

func (t *Txn) watched(kind, key string, v any, ev api.Event) {
	t.rev++
	ch := store.Change{Revision: t.rev, Kind: kind, Key: key}
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			panic(fmt.Sprintf("marshal %s %s: %v", kind, key, err)) // api types always marshal
		}
		ch.Value = b
	}
	t.add(ch)
	ev.Revision, ev.Kind, ev.Key = t.rev, kind, key
	t.events = append(t.events, newLogEntry(ev))
}

func (t *Txn) private(kind, key string, v []byte) {
	t.add(store.Change{Kind: kind, Key: key, Value: v})
}

func (t *Txn) add(ch store.Change) {
	t.changes = append(t.changes, ch)
	t.bytes += store.ChangeBytes(ch)
}

// PutCluster stores c (not to be changed afterwards).
func (t *Txn) PutCluster(c *api.Cluster) {
	t.undo = append(t.undo, t.clusters.set(c.ID, c, false))
	cp := *c
	t.watched(store.KindCluster, c.ID, c, api.Event{Type: api.EventPut, Cluster: &cp})
}

// DeleteCluster removes a cluster record.
func (t *Txn) DeleteCluster(id string) {
	t.undo = append(t.undo, t.clusters.set(id, nil, true))
	t.watched(store.KindCluster, id, nil, api.Event{Type: api.EventDelete})
}

// PutGateway stores g (not to be changed afterwards).
func (t *Txn) PutGateway(g *api.Gateway) {
	k := api.GatewayKey(g.ClusterID, g.Hostname)
	t.undo = append(t.undo, t.gateways.set(k, g, false))
	cp := *g
	t.watched(store.KindGateway, k, g, api.Event{Type: api.EventPut, Gateway: &cp})
}

// DeleteGateway removes a gateway record.
func (t *Txn) DeleteGateway(k string) {
	t.undo = append(t.undo, t.gateways.set(k, nil, true))
	t.watched(store.KindGateway, k, nil, api.Event{Type: api.EventDelete})
}

// PutExport stores e (not to be changed afterwards).
func (t *Txn) PutExport(e *api.Export) {
	k := api.ExportKey(e.ClusterID, e.Namespace, e.Name)
	t.undo = append(t.undo, t.exports.set(k, e, false))
	cp := *e
	t.watched(store.KindExport, k, e, api.Event{Type: api.EventPut, Export: &cp})
}

// DeleteExport removes an export record.
func (t *Txn) DeleteExport(k string) {
	t.undo = append(t.undo, t.exports.set(k, nil, true))
	t.watched(store.KindExport, k, nil, api.Event{Type: api.EventDelete})
}

// PutToken stores a join token (private: never watched).
func (t *Txn) PutToken(tr *TokenRecord) {
	t.undo = append(t.undo, t.tokens.set(tr.ID, tr, false))
	b, _ := json.Marshal(tr)
	t.private(store.KindToken, tr.ID, b)
}

// PutCredential stores the hash of a cluster's credential.
func (t *Txn) PutCredential(cluster, hash string) {
	t.undo = append(t.undo, t.creds.set(cluster, hash, false))
	t.private(store.KindCredential, cluster, []byte(hash))
}

// DeleteCredential removes a cluster's credential.
func (t *Txn) DeleteCredential(cluster string) {
	t.undo = append(t.undo, t.creds.set(cluster, "", true))
	t.private(store.KindCredential, cluster, nil)
}

// PutGossipKey stores the clusterset's memberlist key.
func (t *Txn) PutGossipKey(k []byte) {
	old, oldSet := t.gossipKey, t.gossip
	t.undo = append(t.undo, func() { t.gossipKey, t.gossip = old, oldSet })
	t.gossipKey, t.gossip = k, true
	t.private(store.KindMeta, metaGossipKey, k)
}

// PutPolicy stores the clusterset's policy (private: never watched).
func (t *Txn) PutPolicy(p api.Policy) {
	old, oldSet := t.policy, t.policySet
	t.undo = append(t.undo, func() { t.policy, t.policySet = old, oldSet })
	t.policy, t.policySet = &p, true
	b, _ := json.Marshal(p)
	t.private(store.KindMeta, metaPolicy, b)
}

// outcome finds a recorded answer, this transaction's included.
func (t *Txn) outcome(id string) *outcome {
	for _, o := range t.outcomes {
		if o.ID == id {
			return o
		}
	}
	return t.base.outcomes.byID[id]
}

// pruneOutcomes deletes outcome records older than cutoff, as many as fit,
// and reports whether any are left.
func (t *Txn) pruneOutcomes(cutoff time.Time) (more bool) {
	for _, k := range t.base.outcomes.expired(cutoff) {
		if t.pruned[k] {
			continue
		}
		if t.Room() == 0 {
			return true
		}
		t.pruned[k] = true
		t.undo = append(t.undo, func() { delete(t.pruned, k) })
		t.private(store.KindOutcome, k, nil)
	}
	return false
}

// fold makes the committed transaction the committed state s, whose maps
// its tables share. The caller holds the state's write lock.
func (t *Txn) fold(s *state) error {
	s.rev = t.rev
	t.clusters.fold()
	t.gateways.fold()
	t.exports.fold()
	t.tokens.fold()
	t.creds.fold()
	if t.gossip {
		s.gossipKey = t.gossipKey
	}
	if t.policySet {
		s.policy = t.policy
	}
	for _, ch := range t.changes {
		if ch.Kind == store.KindOutcome {
			if err := s.apply(ch); err != nil {
				return err
			}
		}
	}
	return nil
}

// outcomeChange is the record of this transaction's answers.
func (t *Txn) outcomeChange(now time.Time) (store.Change, bool) {
	if len(t.outcomes) == 0 {
		return store.Change{}, false
	}
	b, err := json.Marshal(t.outcomes)
	if err != nil {
		panic(fmt.Sprintf("marshal outcomes: %v", err))
	}
	return store.Change{Kind: store.KindOutcome, Key: outcomeRecordKey(now), Value: b}, true
}
