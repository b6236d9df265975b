package rbac

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/internal/kubeapi"
	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	tmapi "github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/brokersecret"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/discovery"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/k8stest"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/keysecret"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/node"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
)

const (
	ns        = "tunnelmesh-system"
	candidate = "tunnelmesh-gateway"     // the gateway candidates' account
	agent     = "tunnelmesh-route-agent" // every node's route agent's account
	clusterID = "east"
)

// candidateWork is everything a gateway candidate does with the Kubernetes
// API, standby and active; it fails on the first step that does not work.
func candidateWork(ctx context.Context, cfg *rest.Config, gossipPort int) error {
	client, dyn, err := clients(cfg)
	if err != nil {
		return err
	}
	// Discovery, with kubeadm-config and ServiceCIDRs readable. It makes do
	// without kubeadm-config (a warning), so that read is also made here
	// directly: a missing grant then shows as the permission error it is.
	if _, err := client.CoreV1().ConfigMaps(discovery.KubeadmNamespace).Get(ctx, discovery.KubeadmConfigMap, metav1.GetOptions{}); err != nil {
		return fmt.Errorf("discovery: read kubeadm's configuration: %w", err)
	}
	cidrs, err := discovery.Discover(ctx, client, discovery.Overrides{})
	if err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	if discovery.Join(cidrs.Pod) != "10.244.0.0/16" || len(cidrs.Service) == 0 || len(cidrs.Warnings) > 0 {
		return fmt.Errorf("discovery: got %+v; want pods from kubeadm-config, services from ServiceCIDRs, no warnings", cidrs)
	}
	// Every node reads the broker connection meshctl join stored.
	if _, err := brokersecret.Read(ctx, client, ns); err != nil {
		return fmt.Errorf("broker secret: %w", err)
	}
	// A standby waits for the key while the active creates it.
	store := keysecret.Store{Client: client}
	waited := make(chan error, 1)
	go func() { _, err := store.Wait(ctx); waited <- err }()
	time.Sleep(200 * time.Millisecond) // let the standby reach its watch
	if _, err := store.Ensure(ctx); err != nil {
		return fmt.Errorf("keysecret: %w", err)
	}
	if _, err := store.Ensure(ctx); err != nil { // a restart reads it back
		return fmt.Errorf("keysecret (read back): %w", err)
	}
	select {
	case err := <-waited:
		if err != nil {
			return fmt.Errorf("keysecret wait: %w", err)
		}
	case <-time.After(3 * time.Second):
		return errors.New("keysecret wait: no key 3 s after it was created")
	}
	// Election until active, then a graceful release.
	e, err := election.New(election.Config{
		Client: client, Identity: "gw-1", Labelled: election.CandidateNames(client),
		Gossip: election.GossipConfig{BindAddr: "127.0.0.1", BindPort: gossipPort, Peers: election.CandidatePeers(client, gossipPort)},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return fmt.Errorf("election: %w", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- e.Run(runCtx) }()
	var active election.State
	deadline := time.After(4 * time.Second)
	for active.Role != election.Active {
		select {
		case active = <-e.States():
		case err := <-ran:
			return fmt.Errorf("election: %w", err)
		case <-deadline:
			cancel()
			<-ran
			return errors.New("election: not active within 4 s")
		}
	}
	// The active reads the API server's endpoints (remote CIDRs covering them are refused).
	if _, err := node.APIServerAddrs(ctx, client); err != nil {
		return fmt.Errorf("read the API server's endpoints: %w", err)
	}
	// The candidates' memberlist peers and the tunnel's allowed sources: the nodes.
	if _, err := client.CoreV1().Nodes().Get(ctx, active.Holder, metav1.GetOptions{}); err != nil {
		return fmt.Errorf("get this node: %w", err)
	}
	if err := watchOnce(ctx, metav1.ListOptions{}, func(o metav1.ListOptions) (interface{ Stop() }, error) {
		return client.CoreV1().Nodes().Watch(ctx, o)
	}); err != nil {
		return fmt.Errorf("watch nodes: %w", err)
	}
	// Status by the active.
	if err := (status.Writer{Client: dyn, ClusterID: clusterID}).Write(ctx, status.GatewayStatus{ActiveNode: active.Holder, Epoch: active.Epoch}); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	// The active stores its view for the next active; the first write
	// creates the Secret, later ones update it, a new active reads it.
	views := node.ViewStore{Client: client, Namespace: ns}
	for rev := int64(1); rev <= 2; rev++ {
		if err := views.Save(ctx, gateway.StoredView{Base: tmapi.Snapshot{Revision: rev}}, active.Epoch); err != nil {
			return fmt.Errorf("store the gateway view: %w", err)
		}
	}
	if v, _, ok, err := views.Load(ctx); err != nil || !ok || v.Base.Revision != 2 {
		return fmt.Errorf("read the gateway view: %v (found %v, revision %d)", err, ok, v.Base.Revision)
	}
	if _, err := status.Get(ctx, dyn, ns, clusterID); err != nil { // a new active reads its predecessor's
		return fmt.Errorf("read the MeshGateway: %w", err)
	}
	if err := e.Release(ctx); err != nil {
		if rerr := <-ran; rerr != nil {
			return fmt.Errorf("election: %w", rerr) // Run stopped first; say why
		}
		return fmt.Errorf("election release: %w", err)
	}
	return <-ran
}

func clients(cfg *rest.Config) (kubernetes.Interface, dynamic.Interface, error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	return client, dyn, err
}

// agentWork is everything a route agent does with the Kubernetes API.
func agentWork(ctx context.Context, cfg *rest.Config) error {
	client, dyn, err := clients(cfg)
	if err != nil {
		return err
	}
	if _, err := client.CoreV1().Nodes().Get(ctx, "gw-1", metav1.GetOptions{}); err != nil {
		return fmt.Errorf("get this node: %w", err)
	}
	// Informers: the Lease and the cluster's MeshGateway by name, every node.
	byName := func(name string) metav1.ListOptions {
		return metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()}
	}
	if _, err := client.CoordinationV1().Leases(ns).List(ctx, byName(election.DefaultLeaseName)); err != nil {
		return fmt.Errorf("list the Lease: %w", err)
	}
	if err := watchOnce(ctx, byName(election.DefaultLeaseName), func(o metav1.ListOptions) (interface{ Stop() }, error) {
		return client.CoordinationV1().Leases(ns).Watch(ctx, o)
	}); err != nil {
		return fmt.Errorf("watch the Lease: %w", err)
	}
	mgws := dyn.Resource(status.GVR).Namespace(ns)
	if _, err := mgws.List(ctx, byName(clusterID)); err != nil {
		return fmt.Errorf("list the MeshGateway: %w", err)
	}
	if err := watchOnce(ctx, byName(clusterID), func(o metav1.ListOptions) (interface{ Stop() }, error) { return mgws.Watch(ctx, o) }); err != nil {
		return fmt.Errorf("watch the MeshGateway: %w", err)
	}
	if _, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	if err := watchOnce(ctx, metav1.ListOptions{}, func(o metav1.ListOptions) (interface{ Stop() }, error) {
		return client.CoreV1().Nodes().Watch(ctx, o)
	}); err != nil {
		return fmt.Errorf("watch nodes: %w", err)
	}
	return nil
}

func watchOnce(ctx context.Context, o metav1.ListOptions, w func(metav1.ListOptions) (interface{ Stop() }, error)) error {
	wi, err := w(o)
	if err != nil {
		return err
	}
	wi.Stop()
	return nil
}

type env struct {
	t     *testing.T
	api   *kubeapi.Env
	admin kubernetes.Interface
	dyn   dynamic.Interface
	rbac  map[string][]*unstructured.Unstructured // account -> the Roles and ClusterRoles bound to it
	port  int
}

func setup(t *testing.T) *env {
	api := kubeapi.Start(t)
	objs, err := k8stest.Files(deploy.FS, "namespace.yaml", "gateway/crd-meshgateways.yaml", "gateway/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs = kube.Substitute(objs, map[string]string{"CLUSTER_ID": clusterID}) // as meshctl join does
	k8stest.Apply(t, api.Config, objs)
	admin := api.Client(t)
	ctx := t.Context()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: discovery.KubeadmConfigMap, Namespace: discovery.KubeadmNamespace},
		Data: map[string]string{discovery.KubeadmClusterKey: "networking:\n  podSubnet: 10.244.0.0/16\n  serviceSubnet: 10.0.0.0/24\n"}}
	if _, err := admin.CoreV1().ConfigMaps(cm.Namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bs := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: brokersecret.Name, Namespace: ns},
		StringData: map[string]string{"url": "https://192.0.2.1:8443", "ca.crt": "x", "credential": "x", "cluster-id": "east"}}
	if _, err := admin.CoreV1().Secrets(ns).Create(ctx, bs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gw-1", Labels: map[string]string{election.CandidateLabel: "true"}},
		Spec: corev1.NodeSpec{PodCIDRs: []string{"10.244.0.0/24"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Loopback, so that memberlist's join stays on this machine.
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
	if _, err := admin.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rbac := boundRoles(t, objs)
	// memberlist binds it (TCP and UDP) afresh in every run: a port below
	// the ephemeral range, which no outgoing connection takes meanwhile.
	port := testkit.DualPort(t)
	return &env{t: t, api: api, admin: admin, dyn: dynamic.NewForConfigOrDie(api.Config), rbac: rbac, port: port}
}

// reset removes what a previous run created, so every run creates afresh.
func (e *env) reset() {
	ctx := e.t.Context()
	_ = e.admin.CoordinationV1().Leases(ns).Delete(ctx, election.DefaultLeaseName, metav1.DeleteOptions{})
	_ = e.admin.CoreV1().Secrets(ns).Delete(ctx, keysecret.SecretName, metav1.DeleteOptions{})
	_ = e.dyn.Resource(status.GVR).Namespace(ns).Delete(ctx, "east", metav1.DeleteOptions{})
}

// boundRoles maps each ServiceAccount of objs to the Roles and ClusterRoles
// its bindings in objs grant it.
func boundRoles(t *testing.T, objs []*unstructured.Unstructured) map[string][]*unstructured.Unstructured {
	roles := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		if k := o.GetKind(); k == "Role" || k == "ClusterRole" {
			roles[k+"/"+o.GetNamespace()+"/"+o.GetName()] = o.DeepCopy()
		}
	}
	out := map[string][]*unstructured.Unstructured{}
	for _, o := range objs {
		k := o.GetKind()
		if k != "RoleBinding" && k != "ClusterRoleBinding" {
			continue
		}
		var b rbacv1.RoleBinding // the two share the shape
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &b); err != nil {
			t.Fatal(err)
		}
		roleNS := o.GetNamespace()
		if b.RoleRef.Kind == "ClusterRole" {
			roleNS = ""
		}
		role := roles[b.RoleRef.Kind+"/"+roleNS+"/"+b.RoleRef.Name]
		if role == nil {
			t.Fatalf("%s %s binds %s %s, which rbac.yaml lacks", k, o.GetName(), b.RoleRef.Kind, b.RoleRef.Name)
		}
		for _, s := range b.Subjects {
			out[s.Name] = append(out[s.Name], role)
		}
	}
	return out
}

// run does an account's work as that account.
func (e *env) run(account string) error {
	e.reset()
	ctx, cancel := context.WithTimeout(e.t.Context(), 20*time.Second)
	defer cancel()
	cfg := k8stest.Impersonate(e.api.Config, ns, account)
	if account == agent {
		return agentWork(ctx, cfg)
	}
	return candidateWork(ctx, cfg, e.port)
}

func TestServiceAccountsCanDoTheirWork(t *testing.T) {
	e := setup(t)
	for _, account := range []string{candidate, agent} {
		if err := e.run(account); err != nil {
			t.Fatalf("as %s/%s with deploy/gateway/rbac.yaml: %v", ns, account, err)
		}
	}
	// And nothing more than asked: a sample of what they must not do.
	for _, account := range []string{candidate, agent} {
		for _, a := range []authorizationv1.ResourceAttributes{
			{Namespace: ns, Verb: "update", Resource: "secrets", Name: keysecret.SecretName},
			{Namespace: ns, Verb: "get", Resource: "secrets", Name: "other"},
			{Namespace: ns, Verb: "delete", Group: "coordination.k8s.io", Resource: "leases", Name: election.DefaultLeaseName},
			{Namespace: ns, Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Name: "other"},
			{Namespace: ns, Verb: "get", Group: "tunnelmesh.io", Resource: "meshgateways", Name: "other"},
			{Namespace: ns, Verb: "update", Group: "tunnelmesh.io", Resource: "meshgateways", Subresource: "status", Name: "other"},
			{Namespace: ns, Verb: "list", Group: "tunnelmesh.io", Resource: "meshgateways"},
			{Namespace: "kube-system", Verb: "get", Resource: "configmaps", Name: "coredns"},
			{Namespace: "kube-system", Verb: "list", Resource: "pods"},
			{Verb: "update", Resource: "nodes"},
		} {
			if e.allowed(account, a) {
				t.Errorf("%s may %s %s/%s %s/%s; it should not", account, a.Verb, a.Resource, a.Subresource, a.Namespace, a.Name)
			}
		}
	}
	// A plain node's account cannot act as a gateway: no key, no broker
	// credential, no Lease, no status, no MeshGateway to plant.
	for _, a := range []authorizationv1.ResourceAttributes{
		{Namespace: ns, Verb: "get", Resource: "secrets", Name: keysecret.SecretName},
		{Namespace: ns, Verb: "get", Resource: "secrets", Name: brokersecret.Name},
		{Namespace: ns, Verb: "get", Resource: "secrets", Name: "tunnelmesh-gateway-state"},
		{Namespace: ns, Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Name: election.DefaultLeaseName},
		{Namespace: ns, Verb: "create", Group: "coordination.k8s.io", Resource: "leases"},
		{Namespace: ns, Verb: "create", Group: "tunnelmesh.io", Resource: "meshgateways"},
		{Namespace: ns, Verb: "update", Group: "tunnelmesh.io", Resource: "meshgateways", Subresource: "status", Name: clusterID},
	} {
		if e.allowed(agent, a) {
			t.Errorf("the route agent's account may %s %s/%s %s/%s: a plain node could act as a gateway", a.Verb, a.Resource, a.Subresource, a.Namespace, a.Name)
		}
	}
}

// Every verb granted to either account is needed: without it that
// account's work fails, and on a permission error (not on any error).
func TestEveryGrantedVerbIsNeeded(t *testing.T) {
	e := setup(t)
	for _, account := range []string{candidate, agent} {
		if err := e.run(account); err != nil {
			t.Fatalf("%s with the full RBAC: %v", account, err)
		}
	}
	for _, account := range []string{candidate, agent} {
		for _, obj := range e.rbac[account] {
			e.eachVerbNeeded(t, account, obj)
		}
	}
}

// eachVerbNeeded drops each verb of obj's rules in turn.
func (e *env) eachVerbNeeded(t *testing.T, account string, obj *unstructured.Unstructured) {
	role := toRole(t, obj)
	{
		for i, rule := range role.Rules {
			for _, verb := range rule.Verbs {
				name := fmt.Sprintf("%s: %s %s/%s rule %d %v: without %s", account, obj.GetKind(), obj.GetNamespace(), obj.GetName(), i, rule.Resources, verb)
				t.Run(name, func(t *testing.T) {
					cut := role.DeepCopy()
					cut.Rules[i].Verbs = slices.DeleteFunc(slices.Clone(rule.Verbs), func(v string) bool { return v == verb })
					if len(cut.Rules[i].Verbs) == 0 {
						cut.Rules = slices.Delete(cut.Rules, i, i+1)
					}
					probe := attrs(obj.GetNamespace(), rule, verb)
					e.apply(t, obj, cut)
					e.waitAllowed(t, account, probe, false)
					err := e.run(account)
					e.apply(t, obj, role)
					e.waitAllowed(t, account, probe, true)
					if err == nil {
						t.Fatalf("%s's work succeeded without %q on %v: the grant is not needed", account, verb, rule.Resources)
					}
					if !apierrors.IsForbidden(err) {
						t.Fatalf("%s's work failed without %q on %v, but not on a permission error (a test that fails on any error proves nothing): %v", account, verb, rule.Resources, err)
					}
					t.Logf("fails as it should: %v", err)
				})
			}
		}
	}
}

func attrs(namespace string, r rbacv1.PolicyRule, verb string) authorizationv1.ResourceAttributes {
	res, sub, _ := strings.Cut(r.Resources[0], "/")
	a := authorizationv1.ResourceAttributes{Namespace: namespace, Verb: verb, Group: r.APIGroups[0], Resource: res, Subresource: sub}
	if len(r.ResourceNames) > 0 {
		a.Name = r.ResourceNames[0]
	}
	return a
}

func (e *env) allowed(account string, a authorizationv1.ResourceAttributes) bool {
	e.t.Helper()
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               "system:serviceaccount:" + ns + ":" + account,
		Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
		ResourceAttributes: &a,
	}}
	got, err := e.admin.AuthorizationV1().SubjectAccessReviews().Create(e.t.Context(), sar, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return got.Status.Allowed
}

func (e *env) waitAllowed(t *testing.T, account string, a authorizationv1.ResourceAttributes, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.allowed(account, a) != want {
		if time.Now().After(deadline) {
			t.Fatalf("authorizer still says allowed=%v for %+v", !want, a)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func toRole(t *testing.T, u *unstructured.Unstructured) *rbacv1.ClusterRole {
	var r rbacv1.ClusterRole // Role and ClusterRole share the rules' shape
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func (e *env) apply(t *testing.T, orig *unstructured.Unstructured, rules *rbacv1.ClusterRole) {
	t.Helper()
	ctx := t.Context()
	var err error
	if orig.GetKind() == "ClusterRole" {
		var cur *rbacv1.ClusterRole
		if cur, err = e.admin.RbacV1().ClusterRoles().Get(ctx, orig.GetName(), metav1.GetOptions{}); err == nil {
			cur.Rules = rules.Rules
			_, err = e.admin.RbacV1().ClusterRoles().Update(ctx, cur, metav1.UpdateOptions{})
		}
	} else {
		var cur *rbacv1.Role
		if cur, err = e.admin.RbacV1().Roles(orig.GetNamespace()).Get(ctx, orig.GetName(), metav1.GetOptions{}); err == nil {
			cur.Rules = rules.Rules
			_, err = e.admin.RbacV1().Roles(orig.GetNamespace()).Update(ctx, cur, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

// The gateway directory applies as `kubectl apply -k` would (with the
// cluster's ID filled in, as join does), in the kustomization's order: the
// candidates' DaemonSet on labelled nodes and the route agents' on every
// node, each as its own ServiceAccount, with no capability beyond NET_ADMIN.
func TestDeployGatewayApplies(t *testing.T) {
	api := kubeapi.Start(t)
	b, err := fsReadFile("gateway/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	files := []string{"namespace.yaml"}
	for _, r := range k.Resources {
		files = append(files, "gateway/"+r)
	}
	objs, err := k8stest.Files(deploy.FS, files...)
	if err != nil {
		t.Fatal(err)
	}
	k8stest.Apply(t, api.Config, kube.Substitute(objs, map[string]string{"CLUSTER_ID": clusterID}))
	for _, want := range []struct{ ds, account, role string }{
		{"tunnelmesh-gateway", candidate, "--role=candidate"}, {"tunnelmesh-route-agent", agent, "--role=agent"},
	} {
		ds, err := api.Client(t).AppsV1().DaemonSets(ns).Get(t.Context(), want.ds, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pod := ds.Spec.Template.Spec
		c := pod.Containers[0]
		if pod.ServiceAccountName != want.account || !pod.HostNetwork || c.Image != "tunnelmesh/gateway:dev" || c.Args[0] != "k8s" || !slices.Contains(c.Args, want.role) {
			t.Fatalf("DaemonSet %s pod spec: sa %q hostNetwork %v image %q args %v", want.ds, pod.ServiceAccountName, pod.HostNetwork, c.Image, c.Args)
		}
		sc := c.SecurityContext
		if sc.Privileged == nil || *sc.Privileged || len(sc.Capabilities.Add) != 1 || sc.Capabilities.Add[0] != "NET_ADMIN" || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
			t.Fatalf("%s security context %+v; want unprivileged, drop ALL, add only NET_ADMIN", want.ds, sc)
		}
		if want.account == candidate && pod.NodeSelector[election.CandidateLabel] != "true" {
			t.Fatalf("the candidates' DaemonSet runs on nodes without %s=true: %v", election.CandidateLabel, pod.NodeSelector)
		}
		if want.account == agent && !slices.Contains(c.Args, "--cluster-id="+clusterID) {
			t.Fatalf("the route agent is not told the cluster's ID: %v", c.Args)
		}
	}
}

func fsReadFile(name string) ([]byte, error) { return fs.ReadFile(deploy.FS, name) }
