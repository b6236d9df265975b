//go:build tools

// Package tools pins the etcd server kubeadm v1.36.0 expects (image tag 3.6.8-0).
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
