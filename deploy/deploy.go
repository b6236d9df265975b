// Package deploy holds tunnelmesh's Kubernetes manifests as plain YAML that a
// user can read and `kubectl apply -k`, embedded so that meshctl needs no
// files. Each component has a directory of its own.
package deploy

import "embed"

// FS holds every manifest, by path: namespace.yaml, broker/, gateway/, mcs/.
//
//go:embed kustomization.yaml namespace.yaml broker gateway mcs
var FS embed.FS
