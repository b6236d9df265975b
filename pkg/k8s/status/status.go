// Package status publishes what the cluster's active gateway knows as a
// MeshGateway object (tunnelmesh.io/v1alpha1, CRD in deploy/gateway), so that
// kubectl users, meshctl and the route agents read it from the cluster. The
// types are plain structs converted through unstructured objects: no
// generated clientset is needed.
package status

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
)

// API names.
const (
	Group   = "tunnelmesh.io"
	Version = "v1alpha1"
	Kind    = "MeshGateway"
)

// GVR is the MeshGateway resource.
var GVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "meshgateways"}

// MeshGateway is one cluster's gateway status; its name is the cluster ID.
type MeshGateway struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct{}      `json:"spec"`
	Status            GatewayStatus `json:"status,omitempty"`
}

// GatewayStatus is written by the active gateway.
type GatewayStatus struct {
	ClusterID    string   `json:"clusterID,omitempty"`
	ActiveNode   string   `json:"activeNode,omitempty"`
	Epoch        int64    `json:"epoch,omitempty"`
	PublicKey    string   `json:"publicKey,omitempty"`
	Endpoint     string   `json:"endpoint,omitempty"`
	TunnelIP     string   `json:"tunnelIP,omitempty"`
	PodCIDRs     []string `json:"podCIDRs,omitempty"`
	ServiceCIDRs []string `json:"serviceCIDRs,omitempty"`
	// Translations are this cluster's translated CIDRs (the broker's
	// record): the active gateway rewrites between real and mapped.
	Translations []api.Translation `json:"translations,omitempty"`
	// Connected, Total and Connections are derived from Remotes by Write.
	Connected       int             `json:"connected"`
	Total           int             `json:"total"`
	Connections     string          `json:"connections,omitempty"`
	BrokerReachable bool            `json:"brokerReachable"`
	UpdatedAt       *metav1.Time    `json:"updatedAt,omitempty"`
	Remotes         []RemoteCluster `json:"remotes,omitempty"`
	// Standbys are the other gateway candidates as the active sees them.
	Standbys   []Standby          `json:"standbys,omitempty"`
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Standby is a gateway candidate other than the active one.
type Standby struct {
	Node string `json:"node"`
	// Ready: its elector answers in the candidates' memberlist, so it takes
	// over at once; otherwise a failover waits for it (Reason says why).
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
}

// RemoteCluster is this cluster's link to one other cluster, with the CIDRs
// the route agents route to the active gateway.
type RemoteCluster struct {
	Cluster       string       `json:"cluster"`
	Status        string       `json:"status"` // api.StatusConnecting | StatusConnected | StatusError
	Reason        string       `json:"reason,omitempty"`
	ActiveGateway string       `json:"activeGateway,omitempty"`
	Epoch         int64        `json:"epoch,omitempty"`
	Endpoint      string       `json:"endpoint,omitempty"`
	RTTMillis     float64      `json:"rttMillis,omitempty"`
	LossPercent   float64      `json:"lossPercent,omitempty"`
	LastHandshake *metav1.Time `json:"lastHandshake,omitempty"`
	RxBytes       int64        `json:"rxBytes,omitempty"`
	TxBytes       int64        `json:"txBytes,omitempty"`
	// PathMTU and PathMTULost: api.PeerHealth's measurement of the path.
	PathMTU     int `json:"pathMTU,omitempty"`
	PathMTULost int `json:"pathMTULost,omitempty"`
	// PeerEndpoint: api.PeerHealth's, where WireGuard sends to now.
	PeerEndpoint string `json:"peerEndpoint,omitempty"`
	// PodCIDRs and ServiceCIDRs are the cluster's mesh CIDRs: mapped
	// where it is translated, what this cluster routes to it.
	PodCIDRs     []string `json:"podCIDRs,omitempty"`
	ServiceCIDRs []string `json:"serviceCIDRs,omitempty"`
	// Refused are the CIDRs of PodCIDRs/ServiceCIDRs the active gateway
	// refused; every route agent leaves them unrouted too.
	Refused []RefusedCIDR `json:"refused,omitempty"`
}

// RefusedCIDR is a remote CIDR left out, and why.
type RefusedCIDR struct {
	CIDR   string `json:"cidr"`
	Reason string `json:"reason"`
}

// Remotes builds the remote entries from the broker's view (clusters and
// their active gateways) and this gateway's health per peer: pure, sorted by
// cluster, a cluster without health "connecting".
func Remotes(self string, clusters []api.Cluster, gateways []api.Gateway, health []api.PeerHealth) []RemoteCluster {
	active := map[string]api.Gateway{}
	for _, g := range gateways {
		if g.Active {
			if cur, ok := active[g.ClusterID]; !ok || g.Epoch > cur.Epoch {
				active[g.ClusterID] = g
			}
		}
	}
	hs := map[string]api.PeerHealth{}
	for _, h := range health {
		hs[h.Cluster] = h
	}
	var out []RemoteCluster
	for _, c := range clusters {
		if c.ID == self {
			continue
		}
		r := RemoteCluster{Cluster: c.ID, Status: api.StatusConnecting, PodCIDRs: c.MeshPodCIDRs(), ServiceCIDRs: c.MeshServiceCIDRs()}
		if g, ok := active[c.ID]; ok {
			r.ActiveGateway, r.Epoch = g.Hostname, g.Epoch
			ip := g.PublicIP
			if ip == "" {
				ip = g.PrivateIP
			}
			if ip != "" {
				r.Endpoint = fmt.Sprintf("%s:%d", ip, g.Port)
			}
		} else {
			r.Reason = "no active gateway registered"
		}
		if h, ok := hs[c.ID]; ok {
			r.Status, r.Reason, r.RTTMillis, r.LossPercent = h.Status, h.Reason, h.RTTMillis, h.LossPercent
			r.RxBytes, r.TxBytes = h.RxBytes, h.TxBytes
			r.PathMTU, r.PathMTULost, r.PeerEndpoint = h.PathMTU, h.PathMTULost, h.PeerEndpoint
			if !h.LastHandshake.IsZero() {
				t := metav1.NewTime(h.LastHandshake)
				r.LastHandshake = &t
			}
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b RemoteCluster) int { return cmp.Compare(a.Cluster, b.Cluster) })
	return out
}

// summarize fills the derived fields.
func summarize(st *GatewayStatus, now time.Time) {
	slices.SortFunc(st.Remotes, func(a, b RemoteCluster) int { return cmp.Compare(a.Cluster, b.Cluster) })
	st.Connected, st.Total = 0, len(st.Remotes)
	for _, r := range st.Remotes {
		if r.Status == api.StatusConnected {
			st.Connected++
		}
	}
	st.Connections = fmt.Sprintf("%d/%d", st.Connected, st.Total)
	t := metav1.NewTime(now.UTC().Truncate(time.Second))
	st.UpdatedAt = &t
}

// ErrStale is returned when the stored status comes from a newer epoch: a
// gateway that lost the active role must not overwrite its successor.
var ErrStale = errors.New("a newer active gateway owns the status")

// Writer writes the MeshGateway of one cluster.
type Writer struct {
	Client    dynamic.Interface
	Namespace string // defaults.Namespace when empty
	ClusterID string // the object's name
}

func (w Writer) res() dynamic.ResourceInterface {
	ns := w.Namespace
	if ns == "" {
		ns = defaults.Namespace
	}
	return w.Client.Resource(GVR).Namespace(ns)
}

// Write stores st (the derived fields filled in), creating the object if
// needed; a compare-and-swap on resourceVersion with the epoch check makes a
// stale active fail with ErrStale instead of overwriting.
func (w Writer) Write(ctx context.Context, st GatewayStatus) error {
	st.ClusterID = w.ClusterID
	summarize(&st, time.Now())
	for attempt := 0; ; attempt++ {
		cur, err := w.res().Get(ctx, w.ClusterID, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			obj := &MeshGateway{ObjectMeta: metav1.ObjectMeta{Name: w.ClusterID, Labels: map[string]string{"app.kubernetes.io/part-of": "tunnelmesh"}}}
			u, cerr := toUnstructured(obj)
			if cerr != nil {
				return cerr
			}
			cur, err = w.res().Create(ctx, u, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				continue
			}
		}
		if err != nil {
			return fmt.Errorf("read or create MeshGateway %s: %w", w.ClusterID, err)
		}
		old, err := fromUnstructured(cur)
		if err != nil {
			return err
		}
		if old.Status.Epoch > st.Epoch {
			return fmt.Errorf("write MeshGateway %s at epoch %d (stored epoch %d): %w", w.ClusterID, st.Epoch, old.Status.Epoch, ErrStale)
		}
		old.Status = st
		u, err := toUnstructured(old)
		if err != nil {
			return err
		}
		_, err = w.res().UpdateStatus(ctx, u, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) && attempt < 5 {
			continue
		}
		if err != nil {
			return fmt.Errorf("write MeshGateway %s status: %w", w.ClusterID, err)
		}
		return nil
	}
}

// Get reads one cluster's MeshGateway.
func Get(ctx context.Context, client dynamic.Interface, namespace, clusterID string) (*MeshGateway, error) {
	if namespace == "" {
		namespace = defaults.Namespace
	}
	u, err := client.Resource(GVR).Namespace(namespace).Get(ctx, clusterID, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read MeshGateway %s/%s: %w", namespace, clusterID, err)
	}
	return fromUnstructured(u)
}

func toUnstructured(m *MeshGateway) (*unstructured.Unstructured, error) {
	m.APIVersion, m.Kind = Group+"/"+Version, Kind
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(m)
	if err != nil {
		return nil, fmt.Errorf("encode MeshGateway: %w", err)
	}
	return &unstructured.Unstructured{Object: obj}, nil
}

// FromUnstructured decodes a MeshGateway read with a dynamic client or
// delivered by an informer.
func FromUnstructured(u *unstructured.Unstructured) (*MeshGateway, error) { return fromUnstructured(u) }

func fromUnstructured(u *unstructured.Unstructured) (*MeshGateway, error) {
	var m MeshGateway
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &m); err != nil {
		return nil, fmt.Errorf("decode MeshGateway %s: %w", u.GetName(), err)
	}
	return &m, nil
}
