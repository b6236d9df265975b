// Package member makes a cluster a member of a clusterset (Join) and takes
// it out again (Leave). Every check that can refuse runs before anything in
// the cluster changes.
package member

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	mcscrd "sigs.k8s.io/mcs-api/config/crd"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/cidr"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
)

// CIDRDetector finds a cluster's pod and service CIDRs (Discovery: the
// gateway's own pkg/k8s/discovery). Either list may be empty when it cannot tell.
type CIDRDetector interface {
	Detect(ctx context.Context, c *kube.Cluster) (pods, services []string, err error)
}

// Waiter waits until the joined cluster works (tunnels to every other
// member up, TunnelsUp: from the MeshGateway status), telling progress through s.
type Waiter interface {
	Wait(ctx context.Context, c *kube.Cluster, clusterID string, s *progress.Step) error
}

// JoinOptions configure Join.
type JoinOptions struct {
	Info api.BrokerInfo
	// ClusterID defaults to the kube context's name made a valid ID.
	ClusterID    string
	PodCIDRs     []string
	ServiceCIDRs []string
	// GatewayNode is labelled tunnelmesh.io/gateway=true; default: a node
	// already labelled, else the first Ready node.
	GatewayNode string
	Detector    CIDRDetector
	// Waiter defaults to waiting for the DaemonSets of tunnelmesh-system.
	Waiter Waiter
	// Corefile makes CoreDNS serve clusterset.local (nil: say what to do).
	Corefile CorefileEditor
	// Manifests is what gets applied (default deploy.FS without broker/).
	Manifests fs.FS
	// Timeout bounds the final wait (default 5 min).
	Timeout  time.Duration
	Progress *progress.Printer
}

// JoinResult tells what Join did.
type JoinResult struct {
	ClusterID     string
	TunnelIP      string
	GatewayNode   string
	AlreadyMember bool
	// Translations are this cluster's CIDRs the mesh knows under mapped
	// ones (they overlap a member's); Translated the members translated
	// with this join.
	Translations []api.Translation
	Translated   []api.Cluster
}

var idRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// DefaultClusterID makes a cluster ID of a context name ("kind-east" stays,
// "arn:aws:eks:…/prod" becomes "arn-aws-eks-prod").
func DefaultClusterID(contextName string) string {
	s := strings.ToLower(contextName)
	s = regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(s, "-")
	s = strings.Trim(s, "-")
	if len(s) > 63 {
		s = strings.Trim(s[len(s)-63:], "-")
	}
	return s
}

// Objects returns what Join applies: the MCS CRDs and every component
// directory of fsys except the broker's.
func Objects(fsys fs.FS) ([]*unstructured.Unstructured, error) {
	all, err := kube.Manifests(fsys, ".")
	if err != nil {
		return nil, err
	}
	return kube.Prepare(append(mcsCRDs(), all...)), nil
}

// mcsCRDs are the ServiceExport and ServiceImport CRDs of sigs.k8s.io/mcs-api.
func mcsCRDs() []*unstructured.Unstructured {
	var objs []*unstructured.Unstructured
	for _, b := range [][]byte{mcscrd.ServiceExportCRD, mcscrd.ServiceImportCRD} {
		o, err := kube.Decode(b, "mcs-api CRD")
		if err != nil {
			panic(err) // embedded in the module: cannot fail
		}
		objs = append(objs, o...)
	}
	return objs
}

// SharedCRD reports whether o is a CRD other multi-cluster software may use
// too (the MCS and ClusterProperty APIs): uninstall deletes it only when
// asked to (and only if tunnelmesh created it).
func SharedCRD(o *unstructured.Unstructured) bool {
	if o.GetKind() != "CustomResourceDefinition" {
		return false
	}
	g, _, _ := unstructured.NestedString(o.Object, "spec", "group")
	return g != "tunnelmesh.io"
}

// Join makes c a member of the broker's clusterset. Running it again on a
// member changes nothing.
func Join(ctx context.Context, c *kube.Cluster, o JoinOptions) (*JoinResult, error) {
	j, err := newJoiner(ctx, c, o)
	if err != nil {
		return nil, err
	}
	p := j.o.Progress
	p.Info("Joining %s to the clusterset of %s as cluster %q%s", c.Describe(), j.o.Info.URL, j.o.ClusterID, j.idWhy)

	// 1. Read-only checks.
	if err := p.Run("Checking the broker", j.checkBroker); err != nil {
		return nil, err
	}
	if !j.res.AlreadyMember {
		if err := p.Run("Finding the cluster's CIDRs", func(s *progress.Step) error { return cidrs(ctx, c, &j.o, s) }); err != nil {
			return nil, err
		}
	}
	if err := p.Run("Choosing the gateway node", j.chooseGateway); err != nil {
		return nil, err
	}
	// Objects of the same names that others made are never taken over.
	if err := p.Run("Checking for objects tunnelmesh did not create", j.sortOutForeign); err != nil {
		return nil, err
	}
	// 2. The broker decides (CIDR overlap, taken ID, token); a refusal
	// leaves the cluster as it was.
	if !j.res.AlreadyMember {
		if err := p.Run("Joining the broker", j.joinBroker); err != nil {
			return nil, err
		}
	}
	// 3. Install and wait.
	if err := p.Run("Installing tunnelmesh", j.install); err != nil {
		return nil, err
	}
	if err := p.Run("Making CoreDNS serve clusterset.local", func(s *progress.Step) error {
		return configureDNS(ctx, c, j.o.Corefile, s)
	}); err != nil {
		return nil, cli.Failed(err, "run join again", "cannot configure CoreDNS")
	}
	if err := j.wait(); err != nil {
		return nil, err
	}
	return j.res, nil
}

// joiner is one Join: its options with defaults, and what each step found
// for the steps after it.
type joiner struct {
	ctx   context.Context
	c     *kube.Cluster
	o     JoinOptions
	idWhy string // how the cluster ID was chosen, when not by --cluster-id
	objs  []*unstructured.Unstructured
	res   *JoinResult

	bc     *brokerclient.Client
	member *access.Member // the cluster's membership, once known
	gw     *corev1.Node
	nodes  *corev1.NodeList
}

// newJoiner applies the defaults and checks the cluster ID.
func newJoiner(ctx context.Context, c *kube.Cluster, o JoinOptions) (*joiner, error) {
	if o.Progress == nil {
		o.Progress = progress.Discard()
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Manifests == nil {
		o.Manifests = deploy.FS
	}
	j := &joiner{ctx: ctx, c: c}
	if o.ClusterID == "" {
		o.ClusterID = DefaultClusterID(c.Context)
		j.idWhy = " (from the context name; --cluster-id sets another)"
	}
	if !idRE.MatchString(o.ClusterID) || len(o.ClusterID) > 63 {
		return nil, cli.Usage("pass --cluster-id with lower-case letters, digits and '-' (at most 63)", "invalid cluster ID %q", o.ClusterID)
	}
	objs, err := Objects(o.Manifests)
	if err != nil {
		return nil, err
	}
	j.o, j.objs, j.res = o, objs, &JoinResult{ClusterID: o.ClusterID}
	return j, nil
}

// checkBroker reaches the broker and reads the cluster's membership: a
// member of this clusterset already is joined again only where needed.
func (j *joiner) checkBroker(s *progress.Step) error {
	ctx, c, o := j.ctx, j.c, j.o
	var err error
	if j.bc, err = brokerclient.New(o.Info.URL, []byte(o.Info.CA), ""); err != nil {
		return cli.Refused(err, "pass the broker-info file that `meshctl deploy-broker` wrote", "the broker info is invalid")
	}
	if err := j.bc.Healthy(ctx); err != nil {
		return access.Explain(err, o.Info.URL)
	}
	member, err := access.ReadMember(ctx, c)
	if err != nil {
		return cli.Refused(err, "check your access to Secrets in "+defaults.Namespace, "cannot read this cluster's membership")
	}
	if member == nil {
		return nil
	}
	if member.URL != o.Info.URL || string(member.CA) != o.Info.CA {
		return cli.Refused(nil, "run `meshctl leave` first to move it to another clusterset",
			"%s is already a member of the clusterset of %s", c.Describe(), member.URL)
	}
	if member.ClusterID != o.ClusterID && j.idWhy == "" {
		return cli.Refused(nil, "run without --cluster-id, or `meshctl leave` first to rejoin under another ID",
			"this cluster already joined as %q", member.ClusterID)
	}
	mc, err := member.Client()
	if err != nil {
		return err
	}
	snap, err := mc.Snapshot(ctx)
	var ae *api.Error
	if errors.As(err, &ae) && ae.Code == api.CodeUnauthorized {
		return nil // removed from the broker meanwhile: join anew
	}
	if err != nil {
		return access.Explain(err, o.Info.URL)
	}
	for _, cl := range snap.Clusters {
		if cl.ID == member.ClusterID {
			j.res.TunnelIP, j.res.Translations = cl.TunnelIP, cl.Translations
		}
	}
	if member.GossipKey == "" { // joined by an older meshctl
		if err := fetchGossipKey(ctx, member); err != nil {
			return access.Explain(err, o.Info.URL)
		}
		if err := storeMember(ctx, c, j.objs, member); err != nil {
			return cli.Failed(err, "check your access to Secrets in "+defaults.Namespace+" and run join again", "cannot store the clusterset's gossip key")
		}
	}
	j.member = member
	j.res.AlreadyMember = true
	j.res.ClusterID = member.ClusterID
	s.Done("already a member as " + member.ClusterID)
	return nil
}

// chooseGateway picks the node to label and refuses when a node that will
// run our DaemonSets lacks their images.
func (j *joiner) chooseGateway(s *progress.Step) error {
	c, o := j.c, j.o
	nodes, err := c.Client.CoreV1().Nodes().List(j.ctx, metav1.ListOptions{})
	if err != nil {
		return cli.Refused(err, "check your access to nodes (`kubectl get nodes`)", "cannot list the nodes of %s", c.Describe())
	}
	n, why := kube.PickNode(nodes.Items, o.GatewayNode, kube.GatewayLabel)
	switch {
	case n == nil && o.GatewayNode != "":
		return cli.Refused(nil, "pass --gateway-node with a name from `kubectl get nodes`", "node %q does not exist", o.GatewayNode)
	case n == nil:
		return cli.Refused(nil, "wait until a node is Ready (`kubectl get nodes`), or pass --gateway-node",
			"no node can be a gateway: none of the %d node(s) is Ready", len(nodes.Items))
	case !kube.NodeReady(n):
		return cli.Refused(nil, "pick a Ready node with --gateway-node", "node %s is not Ready and cannot be the gateway", n.Name)
	}
	// The DaemonSets run on every node: each Ready node needs the images.
	var lacking []string
	missing := map[string]bool{}
	for i := range nodes.Items {
		nd := &nodes.Items[i]
		if m := kube.MissingImages(nd, kube.Images(j.objs)); len(m) > 0 && (kube.NodeReady(nd) || nd.Name == n.Name) {
			lacking = append(lacking, nd.Name)
			for _, img := range m {
				missing[img] = true
			}
		}
	}
	if len(lacking) > 0 {
		var load, imgs []string
		for img := range missing {
			imgs = append(imgs, img)
		}
		sort.Strings(imgs)
		for _, m := range imgs {
			load = append(load, "kind load docker-image "+m+" --name CLUSTER")
		}
		sort.Strings(lacking)
		return cli.Refused(nil, "build the images with `make images`, then load them into the cluster, for kind:\n"+strings.Join(load, "\n"),
			"the tunnelmesh image(s) %s are missing on node(s) %s", strings.Join(imgs, ", "), strings.Join(lacking, ", "))
	}
	j.gw, j.nodes = n, nodes
	j.res.GatewayNode = n.Name
	s.Done(fmt.Sprintf("%s (%s)", n.Name, why))
	return nil
}

// sortOutForeign keeps out of what join applies every object of the same
// name that tunnelmesh did not create; shared CRDs of others are used as
// they are.
func (j *joiner) sortOutForeign(s *progress.Step) error {
	all := j.objs
	objs, foreign, err := j.c.SortOut(j.ctx, all)
	if err != nil {
		return cli.Refused(err, "check your access to the cluster", "cannot read the objects tunnelmesh installs")
	}
	j.objs = objs
	used, err := useForeign(foreign, all)
	if err != nil {
		return err
	}
	if len(used) == 0 {
		s.Done("none")
		return nil
	}
	s.Done("using the existing " + strings.Join(used, ", ") + " as they are (not created by tunnelmesh: never changed or deleted by it)")
	return nil
}

// joinBroker joins with the token and stores the cluster's credential; a
// credential that cannot be stored is given back (the join undone).
func (j *joiner) joinBroker(s *progress.Step) error {
	ctx, o := j.ctx, j.o
	jr, err := j.bc.Join(ctx, o.Info.JoinToken, api.JoinRequest{ClusterID: o.ClusterID, PodCIDRs: o.PodCIDRs, ServiceCIDRs: o.ServiceCIDRs})
	if err != nil {
		return explainJoin(err, o)
	}
	j.res.TunnelIP, j.res.Translations, j.res.Translated = jr.Cluster.TunnelIP, jr.Cluster.Translations, jr.Translated
	member := &access.Member{URL: o.Info.URL, CA: []byte(o.Info.CA), Credential: jr.Credential, ClusterID: o.ClusterID}
	err = fetchGossipKey(ctx, member)
	if err == nil {
		err = storeMember(ctx, j.c, j.objs, member)
	}
	if err != nil {
		// Without the Secret the credential is lost: undo the join.
		_ = j.bc.RemoveCluster(context.WithoutCancel(ctx), o.ClusterID)
		return cli.Failed(err, "check your access to Secrets in "+defaults.Namespace+" and run join again", "cannot store the cluster's broker credential")
	}
	j.member = member
	s.Done(fmt.Sprintf("cluster %s, tunnel IP %s%s", o.ClusterID, jr.Cluster.TunnelIP, TranslationNote(jr.Cluster, jr.Translated)))
	return nil
}

// install applies the components and labels the gateway node.
func (j *joiner) install(s *progress.Step) error {
	// The images' content as the nodes report it: a rebuilt image
	// loaded under the same tag rolls the workloads running it.
	objs := kube.StampImageDigests(kube.Substitute(j.objs, map[string]string{"CLUSTER_ID": j.res.ClusterID}),
		kube.ImageDigests(j.nodes.Items, kube.Images(j.objs)))
	if err := j.c.Apply(j.ctx, objs); err != nil {
		return cli.Failed(err, "run join again; it resumes where it stopped", "cannot install the components")
	}
	if j.gw.Labels[kube.GatewayLabel] == "true" {
		return nil
	}
	return j.c.LabelNode(j.ctx, j.gw.Name, kube.GatewayLabel)
}

// wait waits, up to the join's timeout, until the cluster works.
func (j *joiner) wait() error {
	wctx, cancel := context.WithTimeout(j.ctx, j.o.Timeout)
	defer cancel()
	w := j.o.Waiter
	if w == nil {
		w = DaemonSetsReady{}
	}
	s := j.o.Progress.Start("Waiting for tunnels to the other members")
	if err := w.Wait(wctx, j.c, j.res.ClusterID, s); err != nil {
		if wctx.Err() != nil && cli.ExitCode(err) == cli.ExitFailure {
			err = &cli.Error{Code: cli.ExitTimeout, What: "joined and installed, but the gateway is not ready yet", Cause: err,
				Fix: "look at the gateway: kubectl -n " + defaults.Namespace + " get pods -o wide; kubectl -n " + defaults.Namespace + " logs -l app.kubernetes.io/component=gateway\nthen run `meshctl show connections` or join again to keep waiting"}
		}
		return s.Fail(err)
	}
	s.Done()
	return nil
}

// useForeign checks that the objects others made can serve tunnelmesh as
// they are: only CustomResourceDefinitions can, when they serve every
// version ours would (ours is the full list of what join installs). It
// returns their names.
func useForeign(foreign, ours []*unstructured.Unstructured) ([]string, error) {
	var used []string
	for _, f := range foreign {
		if f.GetKind() != "CustomResourceDefinition" {
			return nil, cli.Refused(nil, "delete or rename it, or install tunnelmesh into a cluster without it",
				"%s %s already exists and was not created by tunnelmesh", f.GetKind(), nsName(f))
		}
		theirs := servedVersions(f)
		for _, o := range ours {
			if o.GetName() != f.GetName() {
				continue
			}
			for _, v := range servedVersions(o) {
				if !slices.Contains(theirs, v) {
					return nil, cli.Refused(nil, "upgrade that CRD to one serving "+v+" (sigs.k8s.io/mcs-api v0.5 or later), or remove it",
						"CRD %s exists (not created by tunnelmesh) but does not serve version %s, which tunnelmesh uses", f.GetName(), v)
				}
			}
		}
		used = append(used, "CRD "+f.GetName())
	}
	return used, nil
}

func nsName(o *unstructured.Unstructured) string {
	if o.GetNamespace() == "" {
		return o.GetName()
	}
	return o.GetNamespace() + "/" + o.GetName()
}

func servedVersions(crd *unstructured.Unstructured) []string {
	vs, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	var out []string
	for _, v := range vs {
		m, _ := v.(map[string]any)
		if served, _ := m["served"].(bool); served {
			name, _ := m["name"].(string)
			out = append(out, name)
		}
	}
	return out
}

// cidrs fills o's CIDRs from the flags, else the detector.
func cidrs(ctx context.Context, c *kube.Cluster, o *JoinOptions, s *progress.Step) error {
	src := "from the flags"
	if (len(o.PodCIDRs) == 0 || len(o.ServiceCIDRs) == 0) && o.Detector != nil {
		pods, svcs, err := o.Detector.Detect(ctx, c)
		if err != nil {
			return cli.Refused(err, "pass --pod-cidr and --service-cidr", "cannot detect the cluster's CIDRs")
		}
		if len(o.PodCIDRs) == 0 {
			o.PodCIDRs = pods
		}
		if len(o.ServiceCIDRs) == 0 {
			o.ServiceCIDRs = svcs
		}
		src = "detected"
	}
	if len(o.PodCIDRs) == 0 || len(o.ServiceCIDRs) == 0 {
		return cli.Refused(nil, "pass --pod-cidr and --service-cidr (kind's defaults are 10.244.0.0/16 and 10.96.0.0/16; see `kubectl cluster-info dump | grep -m1 -e --cluster-cidr -e --service-cluster-ip-range`)",
			"cannot tell the cluster's pod and service CIDRs")
	}
	for _, l := range [][]string{o.PodCIDRs, o.ServiceCIDRs} {
		for i, p := range l {
			pr, err := cidr.Parse(p, cidr.Strict)
			if err != nil {
				return cli.Usage("pass CIDRs like 10.244.0.0/16", "invalid CIDR %q: %v", p, err)
			}
			l[i] = pr.String() // the broker takes the canonical form only
		}
	}
	s.Done(fmt.Sprintf("pods %s, services %s (%s)", strings.Join(o.PodCIDRs, ","), strings.Join(o.ServiceCIDRs, ","), src))
	return nil
}

func explainJoin(err error, o JoinOptions) error {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return access.Explain(err, o.Info.URL)
	}
	switch ae.Code {
	case api.CodeUnauthorized:
		return cli.Refused(ae, "make a new one with `meshctl deploy-broker` (it keeps the broker) or `broker token create`, and pass the new broker-info file",
			"the join token is wrong, expired or revoked")
	case api.CodeCIDROverlap:
		if ae.Cluster != "" {
			return cli.Refused(ae, "ask the broker's admin to let overlapping clusters join translated (meshctl policy set --overlap translate), or give this cluster pod and service CIDRs that no member uses (--pod-cidr, --service-cidr)",
				"this cluster's CIDRs (pods %s, services %s) overlap member cluster %q", strings.Join(o.PodCIDRs, ","), strings.Join(o.ServiceCIDRs, ","), ae.Cluster)
		}
		return cli.Refused(ae, "give this cluster pod and service CIDRs outside the ranges the broker names (--pod-cidr, --service-cidr)",
			"this cluster's CIDRs (pods %s, services %s) overlap the broker's own address ranges", strings.Join(o.PodCIDRs, ","), strings.Join(o.ServiceCIDRs, ","))
	case api.CodeExhausted:
		return cli.Refused(ae, "ask the broker's admin to widen the clusterset's mapped pool (meshctl policy set --mapped-cidrs) or its tunnel pool (broker --tunnel-cidr)",
			"the broker has no room left for this cluster")
	case api.CodeClusterExists:
		return cli.Refused(ae, "pass --cluster-id with another ID; if this cluster joined before and lost its Secret, remove the old member first (`meshctl leave` in it, or the broker's admin)",
			"cluster ID %q is already taken in the clusterset", o.ClusterID)
	case api.CodeInvalid, api.CodeBadRequest:
		return cli.Refused(ae, "fix the value the broker names", "the broker refused the join request")
	}
	return cli.Failed(ae, "run join again; nothing was changed in the cluster", "the broker could not join the cluster")
}

// TranslationNote says, for people, which CIDRs of c the mesh knows under
// mapped ones and which members were translated with it ("" when none).
func TranslationNote(c api.Cluster, others []api.Cluster) string {
	var b strings.Builder
	if c.Translated() {
		b.WriteString("; overlapping CIDRs translated: " + api.DescribeTranslations(c.Translations))
	}
	for _, m := range others {
		fmt.Fprintf(&b, "; member %s translated too: %s", m.ID, api.DescribeTranslations(m.Translations))
	}
	return b.String()
}

// fetchGossipKey reads the clusterset's gossip key into m: the active
// gateways of all member clusters gossip with it over their tunnel
// addresses, so each learns another's failover while the broker is down.
// The broker hands it only to members (and the admin).
func fetchGossipKey(ctx context.Context, m *access.Member) error {
	mc, err := m.Client()
	if err != nil {
		return err
	}
	cs, err := mc.ClusterSet(ctx)
	if err != nil {
		return fmt.Errorf("read the clusterset's gossip key: %w", err)
	}
	m.GossipKey = cs.GossipKey
	return nil
}

// storeMember writes the Secret (after the namespace).
func storeMember(ctx context.Context, c *kube.Cluster, objs []*unstructured.Unstructured, m *access.Member) error {
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			if err := c.Apply(ctx, []*unstructured.Unstructured{o}); err != nil {
				return err
			}
		}
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: kube.BrokerSecret, Namespace: defaults.Namespace,
			Labels: map[string]string{kube.PartOfLabel: kube.PartOf}},
		Type: corev1.SecretTypeOpaque, Data: m.Data(),
	}
	secrets := c.Client.CoreV1().Secrets(defaults.Namespace)
	_, err := secrets.Create(ctx, sec, metav1.CreateOptions{FieldManager: kube.FieldManager})
	if apierrors.IsAlreadyExists(err) {
		_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{FieldManager: kube.FieldManager})
	}
	return err
}
