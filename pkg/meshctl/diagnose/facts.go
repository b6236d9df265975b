// Package diagnose is `meshctl diagnose`: Gather reads what a cluster and
// the broker say into Facts (thin), and Run judges them with plain
// functions (pure, table-tested), each finding pass, warn or fail with the
// fix in one line.
package diagnose

import (
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
)

// Facts is everything the checks look at, read at one moment.
type Facts struct {
	// ClusterID is this cluster's ID in the clusterset (its broker Secret).
	ClusterID string
	// Now is the API server's clock when the facts were read; every
	// freshness is measured on it, never on meshctl's host.
	Now time.Time

	// BrokerErr is why the broker could not be read ("" when it answered);
	// then Members and Gateways are empty.
	BrokerErr string
	Members   []api.Cluster
	Gateways  []api.Gateway

	Nodes []Node
	// Pods are the pods of tunnelmesh-system.
	Pods []Pod
	// Workloads are the DaemonSets and Deployments of tunnelmesh-system.
	Workloads []Workload
	// GatewayArgs are the gateway container's arguments in the DaemonSet.
	GatewayArgs []string
	// Events are the Warning events of tunnelmesh-system.
	Events []Event

	// MeshGateway is this cluster's status object (nil: none);
	// StatusWrittenAt is when the API server stored its status last (its
	// managedFields time, on the API server's clock).
	MeshGateway     *status.MeshGateway
	StatusWrittenAt time.Time
	// Lease is the gateway election's Lease (nil: none).
	Lease *Lease

	KubeProxy KubeProxy
	DNS       DNS
}

// Lease is the election's Lease tunnelmesh-system/tunnelmesh-gateway.
type Lease struct {
	Holder   string
	Duration time.Duration
	// RenewedAt is when the API server stored the last renewal (its clock).
	RenewedAt time.Time
}

// Node is one node as the checks need it.
type Node struct {
	Name    string
	Ready   bool
	Gateway bool // labelled tunnelmesh.io/gateway=true
	// ClockOffset is the node's clock minus the API server's, estimated
	// from its kubelet's Lease (see Gather); nil when unknown.
	ClockOffset *time.Duration
}

// Pod is one tunnelmesh pod.
type Pod struct {
	Name, Node string
	// Component is the app.kubernetes.io/component label (gateway, controller, …).
	Component string
	Ready     bool
	// Waiting is "Reason: message" of a waiting container; LastError the
	// reason and message of its last termination.
	Waiting, LastError string
	Restarts           int32
}

// Workload is a DaemonSet's or Deployment's readiness.
type Workload struct {
	Kind, Name     string
	Desired, Ready int32
}

// Event is a Warning event about an object of tunnelmesh-system.
type Event struct {
	Object, Reason, Message string
}

// KubeProxy is what the cluster says of kube-proxy.
type KubeProxy struct {
	// ConfigFound: the ConfigMap kube-system/kube-proxy exists; Mode is its
	// configured mode ("" means the default, iptables on Linux).
	ConfigFound bool
	Mode        string
	// DaemonSet: a kube-proxy DaemonSet runs in kube-system.
	DaemonSet bool
}

// DNS is the cluster's DNS configuration.
type DNS struct {
	// Corefile of kube-system/coredns; CorefileFound false when absent.
	CorefileFound bool
	Corefile      string
	// NodeLocal: NodeLocal DNSCache (DaemonSet node-local-dns) runs;
	// NodeLocalCorefile is its configuration.
	NodeLocal         bool
	NodeLocalCorefile string
}
