// Package deploy holds tunnelmesh's Kubernetes manifests as plain YAML that a
// user can read and `kubectl apply -k`, embedded so that meshctl needs no
// files. Each component has a directory of its own.
package deploy

import "embed"

// FS holds every manifest, by path: namespace.yaml, broker/, gateway/, mcs/,
// broker-etcd/ (the replicated broker and its etcd) and cleanup/ (run by
// leave and uninstall only).
//
//go:embed kustomization.yaml namespace.yaml broker broker-etcd gateway mcs cleanup
var FS embed.FS
