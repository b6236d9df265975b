package kube

// Names shared by the verbs (DESIGN.md fixes the namespace and the label).
const (
	Namespace = "tunnelmesh-system"
	// GatewayLabel marks gateway-candidate nodes.
	GatewayLabel = "tunnelmesh.io/gateway"
	// BrokerLabel marks the node holding the in-cluster broker's data.
	BrokerLabel = "tunnelmesh.io/broker"
	// BrokerSecret holds a member cluster's broker access: keys url,
	// ca.crt, credential, cluster-id.
	BrokerSecret = "tunnelmesh-broker"
	// BrokerPKISecret holds an in-cluster broker's CA, server certificate
	// and admin credential.
	BrokerPKISecret = "tunnelmesh-broker-pki"
)
