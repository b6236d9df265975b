package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The broker connection written by `meshctl join`.
const (
	BrokerSecretName = "tunnelmesh-broker"
	BrokerURLKey     = "url"
	BrokerCAKey      = "ca.crt"
	BrokerCredKey    = "credential"
	BrokerClusterKey = "cluster-id"
)

// BrokerInfo is how this cluster reaches the broker.
type BrokerInfo struct {
	URL        string
	CA         []byte
	Credential string
	ClusterID  string
}

// ErrNoBrokerSecret means the cluster has not been joined yet.
var ErrNoBrokerSecret = errors.New("secret " + BrokerSecretName + " not found: join the cluster with `meshctl join` first")

// ParseBrokerSecret reads a broker Secret, naming every missing key.
func ParseBrokerSecret(s *corev1.Secret) (BrokerInfo, error) {
	get := func(k string) string { return strings.TrimSpace(string(s.Data[k])) }
	bi := BrokerInfo{URL: get(BrokerURLKey), CA: s.Data[BrokerCAKey], Credential: get(BrokerCredKey), ClusterID: get(BrokerClusterKey)}
	var missing []string
	for k, v := range map[string]string{BrokerURLKey: bi.URL, BrokerCAKey: string(bi.CA), BrokerCredKey: bi.Credential, BrokerClusterKey: bi.ClusterID} {
		if strings.TrimSpace(v) == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return BrokerInfo{}, fmt.Errorf("secret %s/%s lacks %s: re-run `meshctl join` to rewrite it", s.Namespace, s.Name, strings.Join(missing, ", "))
	}
	return bi, nil
}

// ReadBrokerSecret reads the broker Secret of namespace ns.
func ReadBrokerSecret(ctx context.Context, client kubernetes.Interface, ns string) (BrokerInfo, error) {
	s, err := client.CoreV1().Secrets(ns).Get(ctx, BrokerSecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return BrokerInfo{}, ErrNoBrokerSecret
	}
	if err != nil {
		return BrokerInfo{}, fmt.Errorf("read secret %s/%s: %w", ns, BrokerSecretName, err)
	}
	return ParseBrokerSecret(s)
}
