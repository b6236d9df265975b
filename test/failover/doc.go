// Package failover proves the in-cluster gateway end to end with real parts
// and measures its failover: a real kube-apiserver for cluster A, a real
// broker, network namespaces as nodes running the real `gateway k8s` binary
// (two candidates and a worker with a pod behind it) and cluster B's gateway
// (`gateway run`) with a pod behind it. The tests and `make bench-failover`
// live in its _test files; this file only names the package.
package failover
