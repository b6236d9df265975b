// Package api holds the broker's wire types: the records every cluster
// publishes and the watch events that carry changes to them. The broker,
// its client, the gateway and meshctl all speak these types.
package api

import "time"

// Version is the path prefix of the broker's HTTP API.
const Version = "v1"

// Cluster is one member of the clusterset.
type Cluster struct {
	ID           string            `json:"id"`
	PodCIDRs     []string          `json:"podCIDRs"`
	ServiceCIDRs []string          `json:"serviceCIDRs"`
	Labels       map[string]string `json:"labels,omitempty"`
	// TunnelIP is a broker-assigned address, unique in the clusterset, that
	// the cluster's active gateway holds on its WireGuard interface; health
	// probes between gateways travel between tunnel IPs.
	TunnelIP string    `json:"tunnelIP"`
	JoinedAt time.Time `json:"joinedAt"`
	// Translations are the CIDRs of the cluster that the mesh knows under
	// mapped ones (see Translation): those that overlap another member's.
	// Set by the broker, at join or later by its admin.
	Translations []Translation `json:"translations,omitempty"`
}

// Connection states of a gateway's link to one remote cluster.
const (
	StatusConnecting = "connecting"
	StatusConnected  = "connected"
	StatusError      = "error"
)

// PeerHealth is what a gateway reports of its link to one remote cluster.
type PeerHealth struct {
	Cluster       string    `json:"cluster"`
	Status        string    `json:"status"`
	Reason        string    `json:"reason,omitempty"`
	RTTMillis     float64   `json:"rttMillis,omitempty"`
	LossPercent   float64   `json:"lossPercent,omitempty"`
	LastHandshake time.Time `json:"lastHandshake,omitempty"`
	RxBytes       int64     `json:"rxBytes,omitempty"`
	TxBytes       int64     `json:"txBytes,omitempty"`
	// PathMTU is the tunnel MTU (bytes) that a full-size don't-fragment
	// probe crossed the tunnel with, both ways, within the last minute;
	// 0 when not measured. PathMTULost is that size when several full-size
	// probes in a row were lost while small ones were answered: packets
	// that large do not cross the path.
	PathMTU     int `json:"pathMTU,omitempty"`
	PathMTULost int `json:"pathMTULost,omitempty"`
	// PeerEndpoint is where WireGuard sends to the peer now: the configured
	// endpoint, or the address its latest authenticated packet came from.
	PeerEndpoint string `json:"peerEndpoint,omitempty"`
}

// Gateway is one gateway node's endpoint. Every gateway candidate of a
// cluster shares the cluster's WireGuard key; Active marks the one that
// currently holds the cluster's lease and carries traffic.
type Gateway struct {
	ClusterID string `json:"clusterID"`
	Hostname  string `json:"hostname"`
	PublicIP  string `json:"publicIP,omitempty"`
	PrivateIP string `json:"privateIP"`
	Port      int    `json:"port"`
	PublicKey string `json:"publicKey"`
	Active    bool   `json:"active"`
	// Epoch fences failover: it grows with every change of a cluster's
	// active gateway (the Lease's transitions), and the broker refuses an
	// active registration older than the cluster's current epoch.
	Epoch int64 `json:"epoch,omitempty"`
	// ObservedIP is the source address the broker saw on the registration
	// (the public address behind NAT); set by the broker, ignored on input.
	ObservedIP string `json:"observedIP,omitempty"`
	// Stale is set by the broker when heartbeats stopped for longer than its
	// TTL, and cleared by the next heartbeat. Liveness and health themselves
	// are in GatewayStatus, which is not watched.
	Stale bool `json:"stale"`
}

// GatewayStatus is a gateway's liveness and per-peer health, reported by its
// heartbeats and read with GET /v1/status. It is kept apart from Gateway so
// that heartbeats never make a watch event or a revision: gateways do not
// need it; meshctl and status writers read it.
type GatewayStatus struct {
	ClusterID     string       `json:"clusterID"`
	Hostname      string       `json:"hostname"`
	Epoch         int64        `json:"epoch,omitempty"`
	LastHeartbeat time.Time    `json:"lastHeartbeat"`
	Health        []PeerHealth `json:"health,omitempty"`
}

// ServicePort is one port of an exported service.
type ServicePort struct {
	Name        string `json:"name,omitempty"`
	Protocol    string `json:"protocol"`
	Port        int32  `json:"port"`
	AppProtocol string `json:"appProtocol,omitempty"`
}

// Endpoint is one backend (a pod) of an export, headless or ClusterSetIP.
type Endpoint struct {
	Addresses []string `json:"addresses"`
	Hostname  string   `json:"hostname,omitempty"`
	Ready     bool     `json:"ready"`
	// Ports are the ports this backend listens on (the Service's resolved
	// targetPorts), named as the Service's ports: an importing cluster's
	// kube-proxy matches them by name to the derived Service's ports.
	Ports []ServicePort `json:"ports,omitempty"`
}

// Service import types (KEP-1645).
const (
	TypeClusterSetIP = "ClusterSetIP"
	TypeHeadless     = "Headless"
)

// Export is one cluster's export of one service.
type Export struct {
	ClusterID       string        `json:"clusterID"`
	Namespace       string        `json:"namespace"`
	Name            string        `json:"name"`
	Type            string        `json:"type"`
	Ports           []ServicePort `json:"ports,omitempty"`
	IPs             []string      `json:"ips,omitempty"`
	IPFamilies      []string      `json:"ipFamilies,omitempty"`
	SessionAffinity string        `json:"sessionAffinity,omitempty"`
	// SessionAffinityTimeoutSeconds is sessionAffinityConfig.clientIP.timeoutSeconds.
	SessionAffinityTimeoutSeconds *int32            `json:"sessionAffinityTimeoutSeconds,omitempty"`
	InternalTrafficPolicy         string            `json:"internalTrafficPolicy,omitempty"`
	TrafficDistribution           string            `json:"trafficDistribution,omitempty"`
	Labels                        map[string]string `json:"labels,omitempty"`
	Annotations                   map[string]string `json:"annotations,omitempty"`
	// CreatedAt is when the broker first received this export, kept
	// across its updates; the oldest export wins each conflicting property.
	// Set by the broker, ignored on input (so no exporter can claim to be
	// the oldest).
	CreatedAt time.Time  `json:"createdAt"`
	Endpoints []Endpoint `json:"endpoints,omitempty"`
}

// Snapshot is the whole broker state at one revision.
type Snapshot struct {
	Revision int64     `json:"revision"`
	Clusters []Cluster `json:"clusters"`
	Gateways []Gateway `json:"gateways"`
	Exports  []Export  `json:"exports"`
}

// Kinds of record.
const (
	KindCluster = "cluster"
	KindGateway = "gateway"
	KindExport  = "export"
)

// Watch event types.
const (
	// EventSnapshot carries the whole state; the client replaces what it had.
	EventSnapshot = "SNAPSHOT"
	EventPut      = "PUT"
	EventDelete   = "DELETE"
	// EventBookmark carries only a revision, sent on idle streams.
	EventBookmark = "BOOKMARK"
)

// Event is one line of the watch stream (newline-delimited JSON).
type Event struct {
	Type     string    `json:"type"`
	Revision int64     `json:"revision"`
	Kind     string    `json:"kind,omitempty"`
	Key      string    `json:"key,omitempty"`
	Cluster  *Cluster  `json:"cluster,omitempty"`
	Gateway  *Gateway  `json:"gateway,omitempty"`
	Export   *Export   `json:"export,omitempty"`
	Snapshot *Snapshot `json:"snapshot,omitempty"`
}

// JoinRequest is sent with a join token to create a cluster record.
type JoinRequest struct {
	ClusterID    string            `json:"clusterID"`
	PodCIDRs     []string          `json:"podCIDRs"`
	ServiceCIDRs []string          `json:"serviceCIDRs"`
	Labels       map[string]string `json:"labels,omitempty"`
}

// HeaderIdempotencyKey carries a write's idempotency key: a random string
// (at least 128 bits) the client makes once per write and sends again on
// every retry of it. A retry of a write that was made gets the answer the
// write got (a join its credential), so a write whose answer was lost is
// safe to send again.
const HeaderIdempotencyKey = "Idempotency-Key"

// JoinResponse returns the cluster's own credential; it is shown once.
type JoinResponse struct {
	Cluster    Cluster `json:"cluster"`
	Credential string  `json:"credential"`
	// Translated are the members whose CIDRs this join overlapped and
	// that got translations with it (their new records).
	Translated []Cluster `json:"translated,omitempty"`
}

// TranslateRequest asks the broker (admin) to translate CIDRs of a member
// that joined without translation: POST /v1/clusters/{id}/translations.
type TranslateRequest struct {
	// CIDRs are the member's real CIDRs to translate; empty: all of them.
	CIDRs []string `json:"cidrs,omitempty"`
}

// Error is the body of every non-2xx response.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field names the offending request field, when there is one.
	Field string `json:"field,omitempty"`
	// Cluster names the other cluster of a conflict.
	Cluster string `json:"cluster,omitempty"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// BrokerInfo is what `meshctl deploy-broker` writes and `meshctl join` reads.
type BrokerInfo struct {
	URL       string `json:"url"`
	CA        string `json:"ca"` // PEM
	JoinToken string `json:"joinToken,omitempty"`
}

// ClusterSet is what every member cluster shares, read with its own
// credential (GET /v1/clusterset).
type ClusterSet struct {
	// GossipKey is the memberlist key (base64 of 32 bytes) with which the
	// active gateways of all clusters gossip over their tunnel addresses.
	GossipKey string `json:"gossipKey"`
}

// Error codes carried in Error.Code.
const (
	CodeBadRequest       = "BadRequest"           // malformed JSON, unknown fields, bad query
	CodeInvalid          = "Invalid"              // a field failed validation; Field names it
	CodeUnauthorized     = "Unauthorized"         // missing, unknown, expired or revoked credential
	CodeForbidden        = "Forbidden"            // credential may not touch this record
	CodeNotFound         = "NotFound"             // no such record
	CodeConflict         = "Conflict"             // clashes with another record; Cluster names its owner
	CodeCIDROverlap      = "CIDROverlap"          // a CIDR overlaps another cluster's (Cluster) or the tunnel CIDR
	CodeClusterExists    = "ClusterExists"        // a cluster with this ID has already joined
	CodeTooLarge         = "PayloadTooLarge"      // body over the size limit
	CodeUnsupportedMedia = "UnsupportedMediaType" // body is not application/json
	CodeExhausted        = "Exhausted"            // no free tunnel IP left
	CodeInternal         = "Internal"             // the broker failed; retry
	CodeUnavailable      = "Unavailable"          // the broker is shutting down or not ready; nothing was written
	CodeOutcomeUnknown   = "OutcomeUnknown"       // the store did not confirm a write in time: it may have been made; retry with the same Idempotency-Key
	CodeTooManyRequests  = "TooManyRequests"      // a per-credential limit (open watch streams) is reached
	CodeRequestTimeout   = "RequestTimeout"       // the request body did not arrive in time
	CodeMethodNotAllowed = "MethodNotAllowed"     // the path exists, the method does not (see Allow)
	CodeOutsidePolicy    = "OutsidePolicy"        // a CIDR the clusterset policy does not allow (Field names it; see GET /v1/policy)
	CodeQuotaExceeded    = "QuotaExceeded"        // a per-cluster cap (gateways, exports) is reached; the broker's admin sets it
)

// CreateTokenRequest asks for a new join token (admin only).
type CreateTokenRequest struct {
	// TTLSeconds is the token's lifetime; 0 means 24 hours.
	TTLSeconds  int64  `json:"ttlSeconds"`
	Description string `json:"description,omitempty"`
}

// TokenInfo describes a join token; the secret itself is never listed.
type TokenInfo struct {
	ID          string     `json:"id"`
	Description string     `json:"description,omitempty"`
	CreatedAt   time.Time  `json:"createdAt"`
	ExpiresAt   time.Time  `json:"expiresAt"`
	RevokedAt   *time.Time `json:"revokedAt,omitempty"`
	// Uses counts the successful joins made with the token.
	Uses int `json:"uses"`
}

// CreateTokenResponse returns the new join token; it is shown once.
type CreateTokenResponse struct {
	Token string    `json:"token"`
	Info  TokenInfo `json:"info"`
}

// HeartbeatRequest is a gateway's periodic report.
type HeartbeatRequest struct {
	Health []PeerHealth `json:"health,omitempty"`
}
