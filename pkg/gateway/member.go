package gateway

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// Role is a gateway candidate's part in its cluster.
type Role string

const (
	// RoleActive carries the cluster's traffic.
	RoleActive Role = "active"
	// RoleStandby has the cluster's key and a device, but no peers or address.
	RoleStandby Role = "standby"
)

// DefaultHeartbeatInterval is how often a gateway heartbeats to the broker.
const DefaultHeartbeatInterval = 10 * time.Second

// Registrar is what the member loop needs of the broker client.
type Registrar interface {
	RegisterGateway(ctx context.Context, g api.Gateway) error
	Heartbeat(ctx context.Context, clusterID, hostname string, health []api.PeerHealth) error
}

// MemberConfig configures a Member.
type MemberConfig struct {
	// Gateway is the record to announce; Active and Epoch come from the role.
	Gateway api.Gateway
	// Interval between heartbeats (default 10 s).
	Interval time.Duration
	// Health, when set, is reported with every heartbeat.
	Health func() []api.PeerHealth
	Log    *slog.Logger
}

// Member registers a gateway with the broker under the role and epoch its
// caller gives (a Kubernetes election, or a flag outside Kubernetes) and
// heartbeats. A role change re-registers at once.
type Member struct {
	cfg  MemberConfig
	b    Registrar
	log  *slog.Logger
	kick chan struct{}

	mu    sync.Mutex
	role  Role
	epoch int64
	gen   int // bumped by SetRole; the registration made is for this generation
}

// NewMember returns a Member in the given role; Run does the work.
func NewMember(cfg MemberConfig, b Registrar, role Role, epoch int64) *Member {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultHeartbeatInterval
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Member{cfg: cfg, b: b, log: cfg.Log, kick: make(chan struct{}, 1), role: role, epoch: epoch}
}

// SetRole changes the announced role and epoch; the broker is told at once.
func (m *Member) SetRole(role Role, epoch int64) {
	m.mu.Lock()
	if m.role == role && m.epoch == epoch {
		m.mu.Unlock()
		return
	}
	m.role, m.epoch = role, epoch
	m.gen++
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Role returns the current role and epoch.
func (m *Member) Role() (Role, int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.role, m.epoch
}

// Record is the gateway record announced for the current role.
func (m *Member) Record() api.Gateway {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.cfg.Gateway
	g.Active, g.Epoch = m.role == RoleActive, m.epoch
	return g
}

// Run registers, then heartbeats every interval, re-registering after a
// role change or a failed heartbeat (the broker may have lost or expired
// the record), with backoff while the broker is unreachable, until ctx ends.
func (m *Member) Run(ctx context.Context) error {
	registered := -1 // generation registered; -1: none
	backoff := time.Second
	for ctx.Err() == nil {
		m.mu.Lock()
		gen := m.gen
		m.mu.Unlock()
		var err error
		if registered != gen {
			g := m.Record()
			if err = m.b.RegisterGateway(ctx, g); err == nil {
				registered = gen
				m.log.Info("registered with broker", "cluster", g.ClusterID, "hostname", g.Hostname, "active", g.Active, "epoch", g.Epoch)
			}
		} else {
			var health []api.PeerHealth
			if m.cfg.Health != nil {
				health = m.cfg.Health()
			}
			if err = m.b.Heartbeat(ctx, m.cfg.Gateway.ClusterID, m.cfg.Gateway.Hostname, health); err != nil {
				registered = -1
			}
		}
		wait := m.cfg.Interval
		if err != nil {
			if ctx.Err() == nil {
				m.log.Warn("broker registration/heartbeat failed", "err", err)
			}
			wait, backoff = backoff, min(2*backoff, m.cfg.Interval)
		} else {
			backoff = time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-m.kick:
		case <-t.C:
		}
		t.Stop()
	}
	return nil
}
