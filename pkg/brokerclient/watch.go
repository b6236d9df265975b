package brokerclient

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// fnError marks an error returned by the caller's callback.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// Reconnect backoff of a watch: the wait doubles from reconnectMin with
// every attempt that got nothing, up to reconnectMax, and each wait is
// drawn from its upper half. The cap is low so that a broker back from an
// outage is felt within reconnectMax (plus one round trip); the jitter
// spreads the reconnects of many clusters over that window instead of
// sending them at once.
const (
	reconnectMin = 200 * time.Millisecond
	reconnectMax = 2 * time.Second
)

// reconnectWait is the wait before reconnect attempt n (1: the first after
// a stream ended) and the backoff for the next.
func reconnectWait(backoff time.Duration) (wait, next time.Duration) {
	return backoff/2 + rand.N(backoff/2+1), min(2*backoff, reconnectMax)
}

// Watch streams the broker's changes after revision since (0: start with
// a snapshot) and calls fn for each SNAPSHOT, PUT and DELETE event, in
// revision order. Bookmarks only advance the resume point. After a
// disconnect it reconnects with jittered backoff (0.1 s growing to at most
// 2 s between attempts) and resumes after the last revision it saw, so fn
// sees nothing twice and misses nothing; when the broker no longer has
// that revision it sends a SNAPSHOT. With several replica URLs each
// reconnect goes to the next replica; replicas sharing an etcd store serve
// the same revisions, so the watch resumes there where it stopped. Watch
// returns only when ctx is done (ctx.Err()) or fn returns an error (that
// error).
func (c *Client) Watch(ctx context.Context, since int64, fn func(api.Event) error) error {
	backoff := reconnectMin
	for {
		from := c.cur.Load()
		progressed, err := c.watchOnce(ctx, &since, fn)
		var fe fnError
		if errors.As(err, &fe) {
			return fe.err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if progressed {
			backoff = reconnectMin
		}
		c.failover(from)
		var wait time.Duration
		wait, backoff = reconnectWait(backoff)
		c.logger().Warn("broker watch interrupted; reconnecting", "err", err, "since", since, "url", c.base(), "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// watchOnce runs one stream until it fails. progressed reports whether any
// event arrived.
func (c *Client) watchOnce(ctx context.Context, since *int64, fn func(api.Event) error) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base()+"/v1/watch?since="+strconv.FormatInt(*since, 10), nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "application/x-ndjson")
	if c.cred != "" {
		req.Header.Set("Authorization", "Bearer "+c.cred)
	}
	resp, err := c.stream.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, decodeError(resp)
	}
	// A stream that goes silent (no event, no bookmark) is presumed dead.
	idle := c.WatchIdleTimeout
	if idle <= 0 {
		idle = 45 * time.Second
	}
	timer := time.AfterFunc(idle, cancel)
	defer timer.Stop()
	dec := json.NewDecoder(bufio.NewReaderSize(resp.Body, 64<<10))
	for {
		var ev api.Event
		if err := dec.Decode(&ev); err != nil {
			return progressed, fmt.Errorf("watch stream: %w", err)
		}
		timer.Reset(idle)
		progressed = true
		switch ev.Type {
		case api.EventBookmark:
		case api.EventSnapshot, api.EventPut, api.EventDelete:
			if ev.Revision <= *since && ev.Type != api.EventSnapshot {
				continue // never deliver twice
			}
			if err := fn(ev); err != nil {
				return progressed, fnError{err}
			}
		default:
			continue // newer broker, unknown event type: skip
		}
		if ev.Revision > *since || ev.Type == api.EventSnapshot {
			*since = ev.Revision
		}
	}
}

// View is the whole broker state as a watch has delivered it so far.
// It is safe for concurrent use.
type View struct {
	mu       sync.RWMutex
	rev      int64
	clusters map[string]api.Cluster
	gateways map[string]api.Gateway
	exports  map[string]api.Export
}

// NewView returns an empty View.
func NewView() *View {
	return &View{clusters: map[string]api.Cluster{}, gateways: map[string]api.Gateway{}, exports: map[string]api.Export{}}
}

// Apply folds one watch event into the view.
func (v *View) Apply(ev api.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch ev.Type {
	case api.EventSnapshot:
		if ev.Snapshot == nil {
			return
		}
		v.clusters = make(map[string]api.Cluster, len(ev.Snapshot.Clusters))
		v.gateways = make(map[string]api.Gateway, len(ev.Snapshot.Gateways))
		v.exports = make(map[string]api.Export, len(ev.Snapshot.Exports))
		for _, c := range ev.Snapshot.Clusters {
			v.clusters[c.ID] = c
		}
		for _, g := range ev.Snapshot.Gateways {
			v.gateways[api.GatewayKey(g.ClusterID, g.Hostname)] = g
		}
		for _, e := range ev.Snapshot.Exports {
			v.exports[api.ExportKey(e.ClusterID, e.Namespace, e.Name)] = e
		}
	case api.EventPut:
		switch {
		case ev.Cluster != nil:
			v.clusters[ev.Key] = *ev.Cluster
		case ev.Gateway != nil:
			v.gateways[ev.Key] = *ev.Gateway
		case ev.Export != nil:
			v.exports[ev.Key] = *ev.Export
		}
	case api.EventDelete:
		switch ev.Kind {
		case api.KindCluster:
			delete(v.clusters, ev.Key)
		case api.KindGateway:
			delete(v.gateways, ev.Key)
		case api.KindExport:
			delete(v.exports, ev.Key)
		}
	default:
		return
	}
	if ev.Revision > v.rev || ev.Type == api.EventSnapshot {
		v.rev = ev.Revision
	}
}

// Revision is the revision of the last applied event.
func (v *View) Revision() int64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.rev
}

// Snapshot returns the view's state sorted by key. Slices and maps inside
// the records are shared with the view; treat them as read-only.
func (v *View) Snapshot() api.Snapshot {
	v.mu.RLock()
	defer v.mu.RUnlock()
	s := api.Snapshot{
		Revision: v.rev,
		Clusters: make([]api.Cluster, 0, len(v.clusters)),
		Gateways: make([]api.Gateway, 0, len(v.gateways)),
		Exports:  make([]api.Export, 0, len(v.exports)),
	}
	for _, k := range sortedKeys(v.clusters) {
		s.Clusters = append(s.Clusters, v.clusters[k])
	}
	for _, k := range sortedKeys(v.gateways) {
		s.Gateways = append(s.Gateways, v.gateways[k])
	}
	for _, k := range sortedKeys(v.exports) {
		s.Exports = append(s.Exports, v.exports[k])
	}
	return s
}

// Follow keeps a View of the broker's state and calls onChange with the
// whole current state after the initial snapshot and after every change.
// Bursts of changes are coalesced: onChange runs in one goroutine and, when
// it is slow, the next call carries every change made meanwhile. Follow
// returns only when ctx is done.
func (c *Client) Follow(ctx context.Context, onChange func(api.Snapshot)) error {
	v := NewView()
	changed := make(chan struct{}, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- c.Watch(ctx, 0, func(ev api.Event) error {
			v.Apply(ev)
			select {
			case changed <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	for {
		select {
		case <-changed:
			onChange(v.Snapshot())
		case err := <-errc:
			return err
		}
	}
}
