package kube

import "github.com/tunnelmesh/tunnelmesh/pkg/k8s/brokersecret"

// Names shared by the verbs (DESIGN.md fixes the label; the namespace is
// defaults.Namespace).
const (
	// GatewayLabel marks gateway-candidate nodes.
	GatewayLabel = "tunnelmesh.io/gateway"
	// BrokerLabel marks the node holding the in-cluster broker's data.
	BrokerLabel = "tunnelmesh.io/broker"
	// BrokerSecret holds a member cluster's broker access (package brokersecret
	// is the contract with the gateway and the controller that read it).
	BrokerSecret = brokersecret.Name
	// BrokerPKISecret holds an in-cluster broker's CA, server certificate
	// and admin credential.
	BrokerPKISecret = "tunnelmesh-broker-pki"
)
