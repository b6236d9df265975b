// Package brokerdeploy runs a tunnelmesh broker: into a Kubernetes cluster
// (InCluster) or as a process on this host (Local). Both end with a join
// token and a broker-info file that `meshctl join` reads.
package brokerdeploy

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerpki"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/fsutil"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
)

// Options configure InCluster.
type Options struct {
	// Node pins the broker (and its data) to this node; default: the node
	// already labelled tunnelmesh.io/broker=true, else the first Ready one.
	// With etcd, the node only gives the default URL's address.
	Node string
	// BrokerURL is how other clusters reach the broker, or several
	// comma-separated URLs (of replicas); default
	// https://<node InternalIP>:<NodePort>. Its hosts go into the
	// certificate.
	BrokerURL string
	// Replicas is how many brokers serve at once; more than one needs Etcd.
	Replicas int
	// Etcd, when it has endpoints, is where the brokers keep their records
	// instead of a bbolt file on the node.
	Etcd EtcdOptions
	// SANs are extra names or IPs for the server certificate.
	SANs []string
	// TokenTTL is the join token's lifetime (default 24 h).
	TokenTTL time.Duration
	// InfoFile receives the broker-info (mode 0600); default broker-info.json.
	InfoFile string
	// Timeout bounds the wait for the broker (default 5 min).
	Timeout  time.Duration
	Progress *progress.Printer
}

// Result is what a deployment made.
type Result struct {
	Info         api.BrokerInfo
	InfoFile     string
	TokenExpires time.Time
	Node         string
	// ReusedPKI is true when the broker's CA already existed.
	ReusedPKI bool
}

const deploymentName = "tunnelmesh-broker"

// Objects returns what InCluster applies: the namespace and deploy/broker.
func Objects() ([]*unstructured.Unstructured, error) {
	ns, err := kube.Manifests(deploy.FS, ".")
	if err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	for _, o := range ns {
		if o.GetKind() == "Namespace" {
			out = append(out, o)
		}
	}
	b, err := kube.Manifests(deploy.FS, "broker")
	if err != nil {
		return nil, err
	}
	return kube.Prepare(append(out, b...)), nil
}

// InCluster deploys (or updates) the broker in c and writes a broker-info
// file with a new join token. Running it again reuses the broker's PKI.
func InCluster(ctx context.Context, c *kube.Cluster, o Options) (*Result, error) {
	o.defaults()
	p := o.Progress
	p.Info("Deploying the tunnelmesh broker into %s", c.Describe())
	objs, err := Objects()
	if err != nil {
		return nil, err
	}
	var etcdSecret, membersSecret map[string][]byte
	bundled := o.Replicas > 1 && !o.Etcd.Enabled()
	if bundled {
		// The bundled etcd (deploy/broker-etcd), secure with no flags: TLS
		// and client certificates from a PKI made here (kept on re-runs).
		eo, err := bundledEtcdObjects()
		if err != nil {
			return nil, err
		}
		objs = append(objs, eo...)
		if membersSecret, etcdSecret, err = bundledEtcdPKI(ctx, c); err != nil {
			return nil, err
		}
		o.Etcd.Endpoints = bundledEtcdEndpoints()
		if err := replicate(objs, o.Replicas, o.Etcd, etcdSecret); err != nil {
			return nil, err
		}
	} else if o.Etcd.Enabled() {
		if etcdSecret, err = o.Etcd.etcdSecretData(); err != nil {
			return nil, err
		}
		if err := replicate(objs, max(o.Replicas, 1), o.Etcd, etcdSecret); err != nil {
			return nil, err
		}
	}
	var urls []string
	if o.BrokerURL != "" {
		if urls, err = brokerclient.ParseURLs(o.BrokerURL); err != nil {
			return nil, cli.Usage("pass --broker-url https://HOST:PORT (several comma-separated for replicas)", "invalid --broker-url %q: %v", o.BrokerURL, err)
		}
	}

	// Checks first: nothing changes before they pass.
	var node *corev1.Node
	err = p.Run("Choosing the broker's node", func(s *progress.Step) error {
		nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return cli.Refused(err, "check your access to nodes (`kubectl get nodes`)", "cannot list the nodes of %s", c.Describe())
		}
		for _, other := range nodes.Items {
			if other.Labels[kube.BrokerLabel] == "true" && o.Etcd.Enabled() {
				return cli.Refused(nil, "copy its store into etcd first (`broker migrate --from bolt:DIR --to etcd:PREFIX`, brokers stopped), "+
					"then remove the label: kubectl label node "+other.Name+" "+kube.BrokerLabel+"-",
					"the broker keeps its data in a bbolt file on node %s", other.Name)
			}
			if other.Labels[kube.BrokerLabel] == "true" && o.Node != "" && other.Name != o.Node {
				return cli.Refused(nil, "run without --node (or with --node "+other.Name+"); to move the broker, `meshctl uninstall` it first — joined clusters must then join again",
					"the broker's data lives on node %s, not %s", other.Name, o.Node)
			}
		}
		n, why := kube.PickNode(nodes.Items, o.Node, kube.BrokerLabel)
		if n == nil {
			if o.Node != "" {
				return cli.Refused(nil, "pass --node with one of `kubectl get nodes`", "node %q does not exist", o.Node)
			}
			return cli.Refused(nil, "wait for a node to be Ready (`kubectl get nodes`)", "no node is Ready to run the broker")
		}
		if kube.InternalIP(n) == "" && o.BrokerURL == "" {
			return cli.Refused(nil, "pass --broker-url https://HOST:PORT", "node %s has no InternalIP to reach the broker at", n.Name)
		}
		if missing := kube.MissingImages(n, kube.Images(objs)); len(missing) > 0 {
			return imagesMissing(n.Name, missing)
		}
		node = n
		s.Status("%s", why)
		s.Done(fmt.Sprintf("%s (%s, %s)", n.Name, kube.InternalIP(n), why))
		return nil
	})
	if err != nil {
		return nil, err
	}
	hosts := []string{kube.InternalIP(node)}
	if len(urls) > 0 {
		hosts = nil
		for _, raw := range urls {
			u, _ := url.Parse(raw) // ParseURLs checked it
			hosts = append(hosts, u.Hostname())
		}
	}

	secrets := c.Client.CoreV1().Secrets(defaults.Namespace)
	existing, err := secrets.Get(ctx, kube.BrokerPKISecret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		existing = nil
	case err != nil:
		return nil, cli.Refused(err, "check your access to Secrets in "+defaults.Namespace, "cannot read Secret %s/%s", defaults.Namespace, kube.BrokerPKISecret)
	default:
		for _, host := range hosts {
			if err := covers(existing.Data[brokerpki.FileServerCert], host); err != nil {
				return nil, cli.Refused(err,
					"pass --broker-url with a host the certificate covers, or remove the broker (`meshctl uninstall --broker`) to start afresh — joined clusters must then join again",
					"the existing broker certificate does not cover %s", host)
			}
		}
	}

	res := &Result{Node: node.Name, ReusedPKI: existing != nil}
	err = p.Run("Installing the broker", func(s *progress.Step) error {
		if err := c.Apply(ctx, objs[:1]); err != nil { // the namespace, for the Secret
			return err
		}
		if existing == nil {
			s.Status("creating its CA and certificates")
			data, err := newPKI(append(append(hosts, "tunnelmesh-broker."+defaults.Namespace+".svc"), o.SANs...))
			if err != nil {
				return err
			}
			sec := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: kube.BrokerPKISecret, Namespace: defaults.Namespace,
					Labels: map[string]string{kube.PartOfLabel: kube.PartOf, "app.kubernetes.io/component": "broker"}},
				Type: corev1.SecretTypeOpaque, Data: data,
			}
			if _, err := secrets.Create(ctx, sec, metav1.CreateOptions{FieldManager: kube.FieldManager}); err != nil {
				return fmt.Errorf("create Secret %s: %w", kube.BrokerPKISecret, err)
			}
		}
		if etcdSecret != nil {
			if err := applySecret(ctx, c, etcdSecretName, etcdSecret); err != nil {
				return err
			}
		}
		if membersSecret != nil {
			if err := applySecret(ctx, c, EtcdTLSSecret, membersSecret); err != nil {
				return err
			}
		}
		if !o.Etcd.Enabled() { // the bbolt file lives on this node
			if err := c.LabelNode(ctx, node.Name, kube.BrokerLabel); err != nil {
				return err
			}
		}
		return c.Apply(ctx, objs[1:])
	})
	if err != nil {
		return nil, err
	}

	sec, err := secrets.Get(ctx, kube.BrokerPKISecret, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read Secret %s: %w", kube.BrokerPKISecret, err)
	}
	wctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var admin *brokerclient.Client
	err = p.Run("Waiting for the broker", func(s *progress.Step) error {
		if err := waitDeployment(wctx, c, s); err != nil {
			return err
		}
		if o.BrokerURL == "" {
			svc, err := c.Client.CoreV1().Services(defaults.Namespace).Get(wctx, deploymentName, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("read Service %s: %w", deploymentName, err)
			}
			port := int32(0)
			for _, sp := range svc.Spec.Ports {
				port = sp.NodePort
			}
			if port == 0 {
				return fmt.Errorf("service %s has no NodePort", deploymentName)
			}
			o.BrokerURL = "https://" + net.JoinHostPort(hosts[0], strconv.Itoa(int(port)))
		}
		var err error
		admin, err = brokerclient.New(o.BrokerURL, sec.Data[brokerpki.FileCACert], strings.TrimSpace(string(sec.Data[brokerpki.FileAdminToken])))
		if err != nil {
			return err
		}
		s.Status("waiting for %s to answer", o.BrokerURL)
		return waitHealthy(wctx, admin, o.BrokerURL)
	})
	if err != nil {
		return nil, err
	}
	if err := finish(ctx, p, admin, o.BrokerURL, sec.Data[brokerpki.FileCACert], o.TokenTTL, o.InfoFile, res); err != nil {
		return nil, err
	}
	return res, nil
}

func (o *Options) defaults() {
	if o.TokenTTL == 0 {
		o.TokenTTL = 24 * time.Hour
	}
	if o.InfoFile == "" {
		o.InfoFile = "broker-info.json"
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Progress == nil {
		o.Progress = progress.Discard()
	}
}

func imagesMissing(node string, missing []string) error {
	var load []string
	for _, m := range missing {
		load = append(load, "kind load docker-image "+m+" --name CLUSTER")
	}
	return cli.Refused(nil,
		"build the images with `make images`, then load them into the cluster, for kind:\n"+strings.Join(load, "\n"),
		"node %s does not have the tunnelmesh image(s) %s", node, strings.Join(missing, ", "))
}

// newPKI makes a new broker PKI for the Secret.
func newPKI(sans []string) (map[string][]byte, error) {
	files, err := brokerpki.Generate(sans)
	if err != nil {
		return nil, fmt.Errorf("create broker PKI: %w", err)
	}
	return files, nil
}

// covers checks that the server certificate in certPEM is valid for host.
func covers(certPEM []byte, host string) error {
	blk, _ := pem.Decode(certPEM)
	if blk == nil {
		return errors.New("no server certificate in the Secret")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return err
	}
	return cert.VerifyHostname(host)
}

// applySecret creates or replaces a Secret of the broker's namespace.
func applySecret(ctx context.Context, c *kube.Cluster, name string, data map[string][]byte) error {
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: defaults.Namespace,
			Labels: map[string]string{kube.PartOfLabel: kube.PartOf, "app.kubernetes.io/component": "broker"}},
		Type: corev1.SecretTypeOpaque, Data: data,
	}
	secrets := c.Client.CoreV1().Secrets(defaults.Namespace)
	_, err := secrets.Create(ctx, sec, metav1.CreateOptions{FieldManager: kube.FieldManager})
	if apierrors.IsAlreadyExists(err) {
		_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{FieldManager: kube.FieldManager})
	}
	if err != nil {
		return fmt.Errorf("write Secret %s: %w", name, err)
	}
	return nil
}

// waitDeployment waits until the broker Deployment has a ready, updated
// replica, reporting its pod's state; a pod that cannot get its image
// fails at once with how to load it.
func waitDeployment(ctx context.Context, c *kube.Cluster, s *progress.Step) error {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		d, err := c.Client.AppsV1().Deployments(defaults.Namespace).Get(ctx, deploymentName, metav1.GetOptions{})
		if err == nil && deploymentReady(d) {
			return nil
		}
		why := kube.PodsProblem(ctx, c, defaults.Namespace, "app.kubernetes.io/name="+deploymentName)
		if why.ImageMissing != "" {
			return imagesMissing(why.Node, []string{why.ImageMissing})
		}
		if why.Text != "" {
			s.Status("%s", why.Text)
		}
		select {
		case <-ctx.Done():
			return &cli.Error{Code: cli.ExitTimeout, What: "the broker did not become ready in time",
				Cause: errors.New(orDefault(why.Text, "no pod running")),
				Fix:   "look at the pod: kubectl -n " + defaults.Namespace + " describe pod -l app.kubernetes.io/name=" + deploymentName}
		case <-tick.C:
		}
	}
}

func deploymentReady(d *appsv1.Deployment) bool {
	return d.Status.ObservedGeneration >= d.Generation && d.Status.ReadyReplicas >= 1 && d.Status.UpdatedReplicas >= 1
}

func waitHealthy(ctx context.Context, c *brokerclient.Client, u string) error {
	var last error
	for {
		if last = c.Healthy(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return &cli.Error{Code: cli.ExitTimeout, What: "the broker does not answer at " + u, Cause: last,
				Fix: "check that this host reaches it (a firewall, another network?), or pass --broker-url with an address that does"}
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// finish creates a join token and writes the broker-info file.
func finish(ctx context.Context, p *progress.Printer, admin *brokerclient.Client, u string, ca []byte, ttl time.Duration, file string, res *Result) error {
	return p.Run("Creating a join token", func(s *progress.Step) error {
		tok, err := admin.CreateTokenInfo(ctx, ttl, "meshctl deploy-broker")
		if err != nil {
			return cli.Failed(err, "check that the admin credential matches the broker's", "cannot create a join token")
		}
		res.Info = api.BrokerInfo{URL: u, CA: string(ca), JoinToken: tok.Token}
		res.TokenExpires = tok.Info.ExpiresAt
		res.InfoFile = file
		if err := WriteInfo(file, res.Info); err != nil {
			return err
		}
		s.Done(fmt.Sprintf("valid until %s, in %s", tok.Info.ExpiresAt.UTC().Format(time.RFC3339), file))
		return nil
	})
}

// WriteInfo writes a broker-info file readable only by its owner.
func WriteInfo(path string, info api.BrokerInfo) error {
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write broker info: %w", err)
	}
	return os.Chmod(path, 0o600) // an older file may have had a wider mode
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
