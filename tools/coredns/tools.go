//go:build tools

// Package tools pins the CoreDNS kubeadm v1.36.0 deploys (image tag v1.14.2).
package tools

import _ "github.com/coredns/coredns"
