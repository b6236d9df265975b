// Package access is how meshctl reaches the broker: from a broker-info
// file, from a member cluster's Secret, or from flags; and how broker
// failures are told to the user.
package access

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/brokersecret"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
)

// Keys of the member Secret tunnelmesh-broker (the contract with its readers).
const (
	KeyURL        = brokersecret.KeyURL
	KeyCA         = brokersecret.KeyCA
	KeyCredential = brokersecret.KeyCredential
	KeyClusterID  = brokersecret.KeyClusterID
	KeyGossip     = brokersecret.KeyGossip
)

// Member is a member cluster's broker access as stored in its Secret.
type Member struct {
	URL        string
	CA         []byte
	Credential string
	ClusterID  string
	GossipKey  string // base64, as the broker hands it out (GET /v1/clusterset)
}

// Client returns a broker client with the member's credential.
func (m *Member) Client() (*brokerclient.Client, error) {
	return brokerclient.New(m.URL, m.CA, m.Credential)
}

// ReadMember reads the Secret of c; nil, nil when there is none.
func ReadMember(ctx context.Context, c *kube.Cluster) (*Member, error) {
	s, err := c.Client.CoreV1().Secrets(defaults.Namespace).Get(ctx, kube.BrokerSecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read Secret %s/%s: %w", defaults.Namespace, kube.BrokerSecret, err)
	}
	return &Member{URL: string(s.Data[KeyURL]), CA: s.Data[KeyCA], Credential: strings.TrimSpace(string(s.Data[KeyCredential])),
		ClusterID: string(s.Data[KeyClusterID]), GossipKey: strings.TrimSpace(string(s.Data[KeyGossip]))}, nil
}

// Data is the Secret's content for m.
func (m *Member) Data() map[string][]byte {
	d := map[string][]byte{KeyURL: []byte(m.URL), KeyCA: m.CA, KeyCredential: []byte(m.Credential), KeyClusterID: []byte(m.ClusterID)}
	if m.GossipKey != "" {
		d[KeyGossip] = []byte(m.GossipKey)
	}
	return d
}

// Flags pick the broker for read-only verbs (show): explicit flags, or
// else the member Secret of the --context cluster.
type Flags struct {
	URL            string
	CAFile         string
	CredentialFile string
	InfoFile       string
}

// Register adds the flags to fs; credential says whose credential
// --credential-file holds.
func (f *Flags) Register(fs *pflag.FlagSet, credential string) {
	fs.StringVar(&f.InfoFile, "broker-info", "", "broker-info file giving the broker's URL and CA")
	fs.StringVar(&f.URL, "broker-url", "", "broker URL (overrides --broker-info's)")
	fs.StringVar(&f.CAFile, "ca-file", "", "broker CA certificate (overrides --broker-info's)")
	fs.StringVar(&f.CredentialFile, "credential-file", "", "file holding "+credential)
}

// Client returns a client per the flags; with none it reads the cluster's
// Secret through connect (called only then).
func (f Flags) Client(ctx context.Context, connect func(context.Context) (*kube.Cluster, error)) (*brokerclient.Client, string, error) {
	if f.InfoFile != "" || f.URL != "" {
		var url string
		var ca []byte
		if f.InfoFile != "" {
			info, err := ReadInfo(f.InfoFile)
			if err != nil {
				return nil, "", err
			}
			url, ca = info.URL, []byte(info.CA)
		}
		if f.URL != "" {
			url = f.URL
		}
		if f.CAFile != "" {
			b, err := os.ReadFile(f.CAFile)
			if err != nil {
				return nil, "", cli.Refused(err, "pass a readable --ca-file", "cannot read the broker CA")
			}
			ca = b
		}
		if f.CredentialFile == "" {
			return nil, "", cli.Usage("pass --credential-file with the admin or a cluster credential (in-cluster broker: key admin.token of Secret tunnelmesh-system/tunnelmesh-broker-pki)", "a credential is needed to read the broker")
		}
		b, err := os.ReadFile(f.CredentialFile)
		if err != nil {
			return nil, "", cli.Refused(err, "pass a readable --credential-file", "cannot read the credential")
		}
		c, err := brokerclient.New(url, ca, strings.TrimSpace(string(b)))
		if err != nil {
			return nil, "", cli.Usage("pass --broker-url https://HOST:PORT", "%v", err)
		}
		return c, url, nil
	}
	kc, err := connect(ctx)
	if err != nil {
		return nil, "", err
	}
	m, err := ReadMember(ctx, kc)
	if err != nil {
		return nil, "", err
	}
	if m == nil {
		return nil, "", cli.Refused(nil, "run it against a member cluster (--context), or pass --broker-url/--broker-info with --credential-file",
			"%s has not joined a clusterset (no Secret %s/%s)", kc.Describe(), defaults.Namespace, kube.BrokerSecret)
	}
	c, err := m.Client()
	return c, m.URL, err
}

// ReadInfo reads a broker-info file.
func ReadInfo(path string) (*api.BrokerInfo, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, cli.Refused(err, "pass the file `meshctl deploy-broker` wrote (broker-info.json)", "cannot read the broker info %s", path)
	}
	var info api.BrokerInfo
	if err := jsonUnmarshal(b, &info); err != nil || info.URL == "" || info.CA == "" {
		return nil, cli.Refused(err, "pass the file `meshctl deploy-broker` wrote; it holds url, ca and joinToken", "%s is not a broker-info file", path)
	}
	// url is one URL or, for a replicated broker, several comma-separated.
	if _, err := brokerclient.ParseURLs(info.URL); err != nil {
		return nil, cli.Refused(err, "write url as https://host:port, or several comma-separated for broker replicas", "%s has a bad url", path)
	}
	return &info, nil
}

// Explain turns a failed broker call into what the user should know.
// Errors the broker answered (api.Error) other than authentication pass
// through unchanged for the caller to explain.
func Explain(err error, url string) error {
	if err == nil {
		return nil
	}
	var ae *api.Error
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var verify *tls.CertificateVerificationError
	var nerr net.Error
	var op *net.OpError
	switch {
	case errors.As(err, &ae):
		if ae.Code == api.CodeUnauthorized {
			return cli.Refused(ae, "get a current credential (join token: run `meshctl deploy-broker` again, or `broker token create`)",
				"the broker at %s refused the credential (wrong, expired or revoked)", url)
		}
		return err
	case errors.As(err, &host):
		return cli.Refused(err, "use the URL the broker's certificate was made for (see broker-info.json), or redeploy the broker with --san / --broker-url",
			"the broker's certificate is not valid for %s", url)
	case errors.As(err, &unknown), errors.As(err, &verify):
		return cli.Refused(err, "use the broker-info file of this broker (a redeployed broker has a new CA: run `meshctl deploy-broker` again for a new file)",
			"certificate mismatch: the broker at %s is not signed by the CA in the broker info", url)
	case errors.As(err, &op), errors.As(err, &nerr):
		return cli.Refused(err, "check that the broker runs and that this host reaches it (firewall, another network?)", "cannot reach the broker at %s", url)
	}
	return cli.Failed(err, "", "broker call to %s failed", url)
}

// NeedsAdmin is the refusal of a call only the broker's admin may make
// (what, e.g. "translating a cluster"), with where that credential is.
func NeedsAdmin(ae *api.Error, what string) error {
	return cli.Refused(ae, fmt.Sprintf("pass --broker-info and --credential-file with the broker's admin credential (admin.token; in-cluster broker: key admin.token of Secret %s/%s)",
		defaults.Namespace, kube.BrokerPKISecret), "%s needs the broker's admin credential", what)
}
