// Package rbac holds no code: its test applies deploy/gateway/rbac.yaml to a
// real apiserver, runs the gateway's Kubernetes work as the gateway's
// ServiceAccount (election, key Secret, discovery, status, the route agent's
// reads) and then removes each granted verb in turn to prove it is needed.
package rbac
