// Package brokersecret is the contract between `meshctl join`, which writes a
// member cluster's broker connection into a Secret, and the components that
// read it (the gateway, the MCS controller, meshctl itself).
package brokersecret

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The broker connection written by `meshctl join`. KeyURL holds the
// broker's URL or, for a replicated broker, its replicas' URLs separated by
// commas (brokerclient.ParseURLs); the client fails over between them.
const (
	Name          = "tunnelmesh-broker"
	KeyURL        = "url"
	KeyCA         = "ca.crt"
	KeyCredential = "credential"
	KeyClusterID  = "cluster-id"
	// KeyGossip (optional) is the clusterset's memberlist key, base64 of 16,
	// 24 or 32 bytes, the same in every member cluster: the active gateways
	// of all clusters gossip with it over their tunnel addresses. Without
	// it the gateways do not gossip across clusters.
	KeyGossip = "gossip-key"
)

// Info is how this cluster reaches the broker.
type Info struct {
	URL        string
	CA         []byte
	Credential string
	ClusterID  string
	GossipKey  []byte // nil when the Secret has none
}

// ErrNotFound means the cluster has not been joined yet.
var ErrNotFound = errors.New("secret " + Name + " not found: join the cluster with `meshctl join` first")

// Parse reads a broker Secret, naming every missing key.
func Parse(s *corev1.Secret) (Info, error) {
	get := func(k string) string { return strings.TrimSpace(string(s.Data[k])) }
	bi := Info{URL: get(KeyURL), CA: s.Data[KeyCA], Credential: get(KeyCredential), ClusterID: get(KeyClusterID)}
	var missing []string
	for k, v := range map[string]string{KeyURL: bi.URL, KeyCA: string(bi.CA), KeyCredential: bi.Credential, KeyClusterID: bi.ClusterID} {
		if strings.TrimSpace(v) == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return Info{}, fmt.Errorf("secret %s/%s lacks %s: re-run `meshctl join` to rewrite it", s.Namespace, s.Name, strings.Join(missing, ", "))
	}
	if g := get(KeyGossip); g != "" {
		k, err := base64.StdEncoding.DecodeString(g)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return Info{}, fmt.Errorf("secret %s/%s: %s is not base64 of 16, 24 or 32 bytes: re-run `meshctl join` to rewrite it", s.Namespace, s.Name, KeyGossip)
		}
		bi.GossipKey = k
	}
	return bi, nil
}

// Read reads the broker Secret of namespace ns.
func Read(ctx context.Context, client kubernetes.Interface, ns string) (Info, error) {
	s, err := client.CoreV1().Secrets(ns).Get(ctx, Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Info{}, ErrNotFound
	}
	if err != nil {
		return Info{}, fmt.Errorf("read secret %s/%s: %w", ns, Name, err)
	}
	return Parse(s)
}
