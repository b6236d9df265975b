package store

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdConfig locates a store in an etcd cluster.
type EtcdConfig struct {
	Endpoints []string
	// TLS for the client connection; nil: plain gRPC.
	TLS *tls.Config
	// Prefix under which every key lives, e.g. /tunnelmesh.
	Prefix string
	// DialTimeout bounds the first connection; default 10 s.
	DialTimeout time.Duration
	// MaxTxnOps is the etcd server's --max-txn-ops (default 128): the most
	// operations one Commit may carry.
	MaxTxnOps int
	// MaxRequestBytes is the etcd server's --max-request-bytes (default
	// 1.5 MiB): the largest request, so the largest Commit.
	MaxRequestBytes int
}

// Defaults of etcd's own --max-txn-ops and --max-request-bytes.
const (
	DefaultEtcdMaxTxnOps       = 128
	DefaultEtcdMaxRequestBytes = 1536 * 1024
)

// Etcd is a Store in an etcd cluster, shared by several broker replicas.
//
// Layout under Prefix: records at <prefix>/<kind>/<key>; the change log at
// <prefix>/log/<last revision of the commit, zero-padded>, one key per
// commit holding its watched changes; the broker revision at
// <prefix>/revision; the schema marker at <prefix>/schema; replicas'
// liveness summaries at <prefix>/presence/<replica> (outside the log).
//
// Every Commit is one etcd transaction that also rewrites the revision key
// and succeeds only if that key was not modified after the caller's base
// (Compare ModRevision), so two replicas can never both commit on top of
// the same state: the loser gets ErrConflict, catches up and retries.
// etcd answers a transaction only after its raft log entry is committed on
// a quorum, so a returned Commit is durable.
type Etcd struct {
	cli      *clientv3.Client
	prefix   string
	maxOps   int
	maxBytes int

	leaseMu sync.Mutex
	lease   clientv3.LeaseID // of this handle's presence key
}

var _ Store = (*Etcd)(nil)

// ErrConflict means another replica committed after the caller's base
// version; the caller catches up (Follow) and retries.
var ErrConflict = errors.New("store changed since the state the write was validated against")

// ErrTooLarge means one commit needs more etcd operations than the etcd
// server allows in one transaction (--max-txn-ops).
var ErrTooLarge = errors.New("commit too large for one etcd transaction")

// OpenEtcd connects to etcd and checks the store under cfg.Prefix. With
// create, an absent store is stamped with SchemaVersion (`broker init`);
// without, an absent one is an error saying to run `broker init`.
func OpenEtcd(ctx context.Context, cfg EtcdConfig, create bool) (*Etcd, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd store: no endpoints; give --etcd-endpoints https://host:2379,…")
	}
	p := strings.TrimRight(cfg.Prefix, "/")
	if p == "" || !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("etcd store: prefix %q must start with / and name a key prefix, e.g. /tunnelmesh", cfg.Prefix)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.MaxTxnOps <= 0 {
		cfg.MaxTxnOps = DefaultEtcdMaxTxnOps
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultEtcdMaxRequestBytes
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		TLS:                  cfg.TLS,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd store: connect %v: %w", cfg.Endpoints, err)
	}
	s := &Etcd{cli: cli, prefix: p, maxOps: cfg.MaxTxnOps, maxBytes: cfg.MaxRequestBytes}
	if err := s.checkSchema(ctx, create); err != nil {
		cli.Close()
		return nil, err
	}
	return s, nil
}

func (s *Etcd) key(parts ...string) string { return s.prefix + "/" + strings.Join(parts, "/") }

func (s *Etcd) revKey() string    { return s.key("revision") }
func (s *Etcd) schemaKey() string { return s.key("schema") }
func (s *Etcd) logKey(rev int64) string {
	return s.key("log", fmt.Sprintf("%020d", rev))
}

func (s *Etcd) checkSchema(ctx context.Context, create bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	k := s.schemaKey()
	if create {
		_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, SchemaVersion)).Commit()
		if err != nil {
			return fmt.Errorf("etcd store %s: create: %w", s.prefix, err)
		}
	}
	resp, err := s.cli.Get(ctx, k)
	if err != nil {
		return fmt.Errorf("etcd store %s: read schema: %w (is etcd reachable at the endpoints given, with the right TLS files?)", s.prefix, err)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("%w: etcd holds no tunnelmesh store under prefix %s; run `broker init --store etcd --etcd-prefix %s …` first, "+
			"or check --etcd-prefix", ErrNoStore, s.prefix, s.prefix)
	}
	if v := string(resp.Kvs[0].Value); v != SchemaVersion {
		return fmt.Errorf("etcd store %s has schema version %q, which this broker does not know (it knows %s): "+
			"it was written by another tunnelmesh version; run that version", s.prefix, v, SchemaVersion)
	}
	return nil
}

// parse splits a key under the prefix into kind and record key.
func (s *Etcd) parse(k []byte) (kind, key string, ok bool) {
	rest, found := strings.CutPrefix(string(k), s.prefix+"/")
	if !found {
		return "", "", false
	}
	kind, key, ok = strings.Cut(rest, "/")
	return kind, key, ok
}

func isKind(k string) bool {
	for _, x := range Kinds {
		if x == k {
			return true
		}
	}
	return false
}

func isPrivate(k string) bool {
	return k == KindToken || k == KindCredential || k == KindMeta || k == KindOutcome
}

// Load implements Store: one consistent read of the whole prefix.
func (s *Etcd) Load(ctx context.Context, logLimit int) (*State, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("load store from etcd %s: %w", s.prefix, err)
	}
	st := &State{Records: map[string]map[string][]byte{}, Version: resp.Header.Revision}
	for _, k := range Kinds {
		st.Records[k] = map[string][]byte{}
	}
	var logs [][]Change
	for _, kv := range resp.Kvs {
		if string(kv.Key) == s.revKey() {
			if st.Revision, err = strconv.ParseInt(string(kv.Value), 10, 64); err != nil {
				return nil, fmt.Errorf("load store: revision key %q: %w", kv.Value, err)
			}
			continue
		}
		kind, key, ok := s.parse(kv.Key)
		switch {
		case !ok:
		case kind == "log":
			var chs []Change
			if err := json.Unmarshal(kv.Value, &chs); err != nil {
				return nil, fmt.Errorf("load store: decode log entry %s: %w", key, err)
			}
			logs = append(logs, chs) // keys sort by revision
		case isKind(kind):
			st.Records[kind][key] = kv.Value
		}
	}
	for _, chs := range logs {
		st.Log = append(st.Log, chs...)
	}
	if len(st.Log) > logLimit {
		st.Log = st.Log[len(st.Log)-logLimit:]
	}
	return st, nil
}

// Revision reads the broker revision the store holds now (a linearizable
// read: what a quorum has committed).
func (s *Etcd) Revision(ctx context.Context) (int64, error) {
	resp, err := s.cli.Get(ctx, s.revKey())
	if err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	return strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64)
}

// LastCommit reads the Version of the last commit any replica made (a
// linearizable read): a replica that has applied less is behind.
func (s *Etcd) LastCommit(ctx context.Context) (int64, error) {
	resp, err := s.cli.Get(ctx, s.revKey(), clientv3.WithKeysOnly())
	if err != nil {
		return 0, fmt.Errorf("read the last commit: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	return resp.Kvs[0].ModRevision, nil
}

// Ping checks that etcd answers a linearizable read (what a quorum has
// committed), the condition for commits to go through.
func (s *Etcd) Ping(ctx context.Context) error {
	_, err := s.Revision(ctx)
	return err
}

// MaxChanges is the most changes one Commit may carry (the etcd server's
// transaction limit less the log, revision and trim operations).
func (s *Etcd) MaxChanges() int { return s.maxOps - 3 }

// requestMargin is what a Commit's request holds besides its changes and
// log entry: keys of the revision and trim operations, protobuf framing.
const requestMargin = 16 << 10

// MaxBytes is the most bytes of changes one Commit may carry: each
// watched change counts twice (its record and its line in the commit's log
// entry), with its key.
func (s *Etcd) MaxBytes() int { return s.maxBytes - requestMargin }

// ChangeBytes is what a change counts against MaxBytes.
func ChangeBytes(ch Change) int {
	n := len(ch.Kind) + len(ch.Key) + len(ch.Value) + 64
	if ch.Revision > 0 {
		n += len(ch.Key) + len(ch.Value)*4/3 + 64 // and again in the log entry (JSON, base64)
	}
	return n
}

// Commit implements Store as one guarded etcd transaction.
func (s *Etcd) Commit(ctx context.Context, base int64, changes []Change, revision int64, retain int) (int64, error) {
	// One operation per record key: etcd refuses a key twice in a txn.
	last := map[string]Change{}
	var logged []Change
	for _, ch := range changes {
		if !isKind(ch.Kind) {
			return 0, fmt.Errorf("commit: unknown kind %q", ch.Kind)
		}
		last[s.key(ch.Kind, ch.Key)] = ch
		if ch.Revision > 0 {
			logged = append(logged, ch)
		}
	}
	keys := make([]string, 0, len(last))
	for k := range last {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ops := make([]clientv3.Op, 0, len(keys)+3)
	for _, k := range keys {
		if ch := last[k]; ch.Value == nil {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, string(ch.Value)))
		}
	}
	if len(logged) > 0 {
		v, err := json.Marshal(logged)
		if err != nil {
			return 0, err
		}
		ops = append(ops, clientv3.OpPut(s.logKey(logged[len(logged)-1].Revision), string(v)))
		if retain > 0 && revision > int64(retain) {
			// Entries whose last revision is at most revision-retain and
			// above what the previous commit trimmed: the range stays as
			// small as the commit (etcd scans deleted keys until it
			// compacts). The bound is below this commit's own log key.
			from := max(0, revision-int64(len(logged))-int64(retain)+1)
			ops = append(ops, clientv3.OpDelete(s.logKey(from), clientv3.WithRange(s.logKey(revision-int64(retain)+1))))
		}
	}
	// Last, so that followers see the commit's end (see Follow).
	ops = append(ops, clientv3.OpPut(s.revKey(), strconv.FormatInt(revision, 10)))
	bytes := 0
	for _, ch := range changes {
		bytes += ChangeBytes(ch)
	}
	if bytes > s.MaxBytes() {
		return 0, fmt.Errorf("%w: %d changes make a request of about %d bytes, the etcd server takes %d (raise etcd's --max-request-bytes and the broker's --etcd-max-request-bytes together)",
			ErrTooLarge, len(changes), bytes+requestMargin, s.maxBytes)
	}
	if len(ops) > s.maxOps {
		return 0, fmt.Errorf("%w: %d changes need %d operations, the etcd server allows %d (raise etcd's --max-txn-ops and the broker's --etcd-max-txn-ops together)",
			ErrTooLarge, len(changes), len(ops), s.maxOps)
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(s.revKey()), "<", base+1)).
		Then(ops...).
		Commit()
	if err != nil {
		if errors.Is(err, rpctypes.ErrTooManyOps) || errors.Is(err, rpctypes.ErrRequestTooLarge) {
			return 0, fmt.Errorf("%w: %v", ErrTooLarge, err)
		}
		// Sent and not answered (a timeout, a lost leader, a member gone):
		// raft may still apply it.
		return 0, fmt.Errorf("commit %d changes to etcd: %w: %w", len(changes), ErrOutcomeUnknown, err)
	}
	if !resp.Succeeded {
		return 0, ErrConflict
	}
	return resp.Header.Revision, nil
}

// Follow implements Store: it watches the prefix from after and turns each
// broker commit (one etcd revision, ending with the revision key) into a
// Batch, own commits included (the caller skips what it has applied).
func (s *Etcd) Follow(ctx context.Context, after int64) <-chan Batch {
	out := make(chan Batch, 64)
	go func() {
		defer close(out)
		send := func(b Batch) bool {
			select {
			case out <- b:
				return true
			case <-ctx.Done():
				return false
			}
		}
		next := after + 1
		for ctx.Err() == nil {
			wctx, cancel := context.WithCancel(ctx)
			wch := s.cli.Watch(clientv3.WithRequireLeader(wctx), s.prefix+"/", clientv3.WithPrefix(), clientv3.WithRev(next))
			var cur *Batch
			for resp := range wch {
				if resp.CompactRevision > 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
					// History is gone: the caller must Load again.
					cancel()
					send(Batch{Reset: true})
					return
				}
				if resp.Err() != nil {
					break
				}
				for _, ev := range resp.Events {
					if cur != nil && ev.Kv.ModRevision != cur.Version {
						cur = nil // a revision without our revision key: not a broker commit
					}
					if cur == nil {
						cur = &Batch{Version: ev.Kv.ModRevision}
					}
					done, err := s.addEvent(cur, ev)
					if err != nil {
						cancel()
						send(Batch{Reset: true, Err: err})
						return
					}
					if done {
						if !send(*cur) {
							cancel()
							return
						}
						next = cur.Version + 1
						cur = nil
					}
				}
			}
			cancel()
			// The watch ended (leader lost, member gone): resume after the
			// last whole commit, on whichever member answers.
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return out
}

// addEvent adds one watch event to b; done reports the commit's end.
func (s *Etcd) addEvent(b *Batch, ev *clientv3.Event) (done bool, err error) {
	k := ev.Kv.Key
	if bytes.Equal(k, []byte(s.revKey())) {
		b.Revision, err = strconv.ParseInt(string(ev.Kv.Value), 10, 64)
		return err == nil, err
	}
	kind, key, ok := s.parse(k)
	switch {
	case !ok:
	case kind == "log" && ev.Type == mvccpb.PUT:
		var chs []Change
		if err := json.Unmarshal(ev.Kv.Value, &chs); err != nil {
			return false, fmt.Errorf("decode log entry %s: %w", key, err)
		}
		b.Changes = append(b.Changes, chs...)
	case isPrivate(kind):
		ch := Change{Kind: kind, Key: key}
		if ev.Type == mvccpb.PUT {
			ch.Value = append([]byte{}, ev.Kv.Value...)
		}
		b.Changes = append(b.Changes, ch)
	}
	// Watched kinds' record keys are in the log entry, with revisions.
	return false, nil
}

// PutPresence stores this replica's liveness summary for ttl; it is no
// revision and no watch event.
// The key lives on a lease, renewed at each call, so a replica that stops
// leaves no summary behind.
func (s *Etcd) PutPresence(ctx context.Context, replica string, data []byte, ttl time.Duration) error {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if s.lease != 0 {
		if _, err := s.cli.KeepAliveOnce(ctx, s.lease); err != nil {
			s.lease = 0 // expired (or etcd lost it): take a new one
		}
	}
	if s.lease == 0 {
		l, err := s.cli.Grant(ctx, int64(max(ttl/time.Second, 5)))
		if err != nil {
			return fmt.Errorf("presence lease: %w", err)
		}
		s.lease = l.ID
	}
	if _, err := s.cli.Put(ctx, s.key("presence", replica), string(data), clientv3.WithLease(s.lease)); err != nil {
		return fmt.Errorf("presence: %w", err)
	}
	return nil
}

// Presence returns every replica's liveness summary.
func (s *Etcd) Presence(ctx context.Context) (map[string][]byte, error) {
	resp, err := s.cli.Get(ctx, s.key("presence")+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	out := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		_, id, _ := s.parse(kv.Key)
		out[id] = kv.Value
	}
	return out, nil
}

// Close implements Store.
func (s *Etcd) Close() error { return s.cli.Close() }
