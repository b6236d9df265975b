package brokerdeploy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
)

// bundledEtcdMembers is the StatefulSet's size in deploy/broker-etcd.
const bundledEtcdMembers = 3

// bundledEtcdObjects are deploy/broker-etcd's etcd: its Service,
// StatefulSet and NetworkPolicy.
func bundledEtcdObjects() ([]*unstructured.Unstructured, error) {
	b, err := deploy.FS.ReadFile("broker-etcd/etcd.yaml")
	if err != nil {
		return nil, err
	}
	objs, err := kube.Decode(b, "broker-etcd/etcd.yaml")
	if err != nil {
		return nil, err
	}
	return kube.Prepare(objs), nil
}

// bundledEtcdEndpoints are the members' client URLs as the brokers reach them.
func bundledEtcdEndpoints() []string {
	var out []string
	for i := range bundledEtcdMembers {
		out = append(out, fmt.Sprintf("https://%s-%d.%s.%s.svc:2379", etcdService, i, etcdService, defaults.Namespace))
	}
	return out
}

// bundledEtcdPKI returns the members' and the broker's Secret data: those
// of an earlier run when both Secrets are there (the members keep their
// CA), else new ones.
func bundledEtcdPKI(ctx context.Context, c *kube.Cluster) (members, broker map[string][]byte, err error) {
	secrets := c.Client.CoreV1().Secrets(defaults.Namespace)
	m, errM := secrets.Get(ctx, EtcdTLSSecret, metav1.GetOptions{})
	b, errB := secrets.Get(ctx, etcdSecretName, metav1.GetOptions{})
	switch {
	case errM == nil && errB == nil && len(m.Data["ca.crt"]) > 0 && len(b.Data["client.crt"]) > 0:
		return m.Data, b.Data, nil
	case errM != nil && !apierrors.IsNotFound(errM):
		return nil, nil, fmt.Errorf("read Secret %s: %w", EtcdTLSSecret, errM)
	case errB != nil && !apierrors.IsNotFound(errB):
		return nil, nil, fmt.Errorf("read Secret %s: %w", etcdSecretName, errB)
	}
	return etcdPKI()
}

// The bundled etcd (deploy/broker-etcd) speaks TLS only, to peers and
// clients, and takes only clients whose certificate its own CA signed: the
// broker's. Its PKI is made here and kept in two Secrets: the members' in
// tunnelmesh-etcd-tls, the broker's client side in tunnelmesh-broker-etcd.
const (
	EtcdTLSSecret     = "tunnelmesh-etcd-tls"
	etcdService       = "tunnelmesh-etcd"
	etcdMemberKeyFile = "member.key"
	etcdMemberCrtFile = "member.crt"
)

// etcdPKI makes a CA, one member certificate (server and peer: every member
// of the StatefulSet's headless Service, by name) and the broker's client
// certificate. It returns the members' Secret data and the broker's.
func etcdPKI() (members, broker map[string][]byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: randSerial(), Subject: pkix.Name{CommonName: "tunnelmesh etcd CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("etcd CA: %w", err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	svc := etcdService + "." + defaults.Namespace + ".svc"
	issue := func(cn string, dns []string, ips []net.IP, usage []x509.ExtKeyUsage) (crt, key []byte, err error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{SerialNumber: randSerial(), Subject: pkix.Name{CommonName: cn}, DNSNames: dns, IPAddresses: ips,
			NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			return nil, nil, fmt.Errorf("etcd certificate %s: %w", cn, err)
		}
		kb, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
	}
	// Members authenticate each other with it too (client auth on peers).
	mCrt, mKey, err := issue("tunnelmesh-etcd", []string{"*." + svc, "*." + svc + ".cluster.local", svc, "localhost"},
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth})
	if err != nil {
		return nil, nil, err
	}
	bCrt, bKey, err := issue("tunnelmesh-broker", nil, nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	if err != nil {
		return nil, nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return map[string][]byte{"ca.crt": caPEM, etcdMemberCrtFile: mCrt, etcdMemberKeyFile: mKey},
		map[string][]byte{"ca.crt": caPEM, "client.crt": bCrt, "client.key": bKey}, nil
}

func randSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
