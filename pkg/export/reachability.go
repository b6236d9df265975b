package export

import "sync"

// Reachability says whether a remote cluster's endpoints can be used now
// (its tunnel is up). The gateway feeds it from its health probes; the
// controller imports the endpoints of unreachable clusters again when they
// come back. The local cluster is always reachable and never asked.
type Reachability interface {
	Reachable(cluster string) bool
	// Changed receives a value (coalesced) whenever an answer may have changed.
	Changed() <-chan struct{}
}

// Tunnels is a Reachability that callers set: every cluster is reachable
// until marked down.
type Tunnels struct {
	mu      sync.Mutex
	down    map[string]bool
	changed chan struct{}
}

// NewTunnels returns a Tunnels with every cluster reachable.
func NewTunnels() *Tunnels {
	return &Tunnels{down: map[string]bool{}, changed: make(chan struct{}, 1)}
}

// SetUp marks cluster's tunnel up or down.
func (t *Tunnels) SetUp(cluster string, up bool) {
	t.mu.Lock()
	was := !t.down[cluster]
	if up {
		delete(t.down, cluster)
	} else {
		t.down[cluster] = true
	}
	t.mu.Unlock()
	if was != up {
		select {
		case t.changed <- struct{}{}:
		default:
		}
	}
}

// Reachable implements Reachability.
func (t *Tunnels) Reachable(cluster string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.down[cluster]
}

// Changed implements Reachability.
func (t *Tunnels) Changed() <-chan struct{} { return t.changed }
