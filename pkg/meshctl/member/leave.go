package member

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/export"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/probe"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
)

// LeaveOptions configure Leave and Uninstall.
type LeaveOptions struct {
	// Force goes on when the broker cannot be told (unreachable broker):
	// the cluster's record then stays there until the admin removes it.
	Force bool
	// DeleteCRDs (uninstall) also deletes the shared CRDs (ServiceExport,
	// ServiceImport, ClusterProperty) tunnelmesh created, and with them every
	// object of those kinds, users' included.
	DeleteCRDs bool
	// Manifests are the components Leave removes (default deploy.FS).
	Manifests fs.FS
	// Timeout bounds waiting for the namespace to go (Uninstall).
	Timeout  time.Duration
	Progress *progress.Printer
}

func (o *LeaveOptions) defaults() {
	if o.Manifests == nil {
		o.Manifests = deploy.FS
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Progress == nil {
		o.Progress = progress.Discard()
	}
}

// Leave takes c out of its clusterset: its records leave the broker, then
// the components join installed, its Corefile edit, the node labels it added
// and its credential are removed. A broker deployed in c stays, and so do
// the namespace and the CRDs. It reports false when c was not a member.
func Leave(ctx context.Context, c *kube.Cluster, o LeaveOptions) (bool, error) {
	o.defaults()
	p := o.Progress
	m, err := access.ReadMember(ctx, c)
	if err != nil {
		return false, cli.Refused(err, "check your access to Secrets in "+defaults.Namespace, "cannot read this cluster's membership")
	}
	if m == nil {
		p.Info("%s is not a member of a clusterset; nothing to do", c.Describe())
		return false, nil
	}
	p.Info("Taking %s (cluster %q) out of the clusterset of %s", c.Describe(), m.ClusterID, m.URL)
	if err := p.Run("Removing the cluster from the broker", func(s *progress.Step) error {
		return removeFromBroker(ctx, m, o.Force, s)
	}); err != nil {
		return true, err
	}
	objs, err := Objects(o.Manifests)
	if err != nil {
		return true, err
	}
	// The namespace and CRDs go only with uninstall: a broker or other
	// users' ServiceExports may live on.
	objs = slices.DeleteFunc(objs, func(obj *unstructured.Unstructured) bool {
		k := obj.GetKind()
		return k == "Namespace" || k == "CustomResourceDefinition"
	})
	if err := p.Run("Removing the components", func(*progress.Step) error {
		_, err := c.DeleteOwned(ctx, objs)
		return err
	}); err != nil {
		return true, err
	}
	if err := p.Run("Cleaning the nodes", func(s *progress.Step) error { return cleanNodes(ctx, c, o.Timeout, s) }); err != nil {
		return true, err
	}
	err = p.Run("Restoring CoreDNS and node labels", func(*progress.Step) error {
		// Before the Secret: a failure here leaves the cluster a member, so
		// that leave runs again.
		if err := restoreDNS(ctx, c); err != nil {
			return err
		}
		if err := c.UnlabelNodes(ctx, kube.GatewayLabel); err != nil {
			return err
		}
		err = c.Client.CoreV1().Secrets(defaults.Namespace).Delete(ctx, kube.BrokerSecret, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		return nil
	})
	return true, err
}

func removeFromBroker(ctx context.Context, m *access.Member, force bool, s *progress.Step) error {
	bc, err := m.Client()
	if err == nil {
		err = bc.RemoveCluster(ctx, m.ClusterID)
	}
	var ae *api.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae) && (ae.Code == api.CodeUnauthorized || ae.Code == api.CodeNotFound):
		s.Done("already gone")
		return nil
	case force:
		s.Done(fmt.Sprintf("could not tell the broker (%v); its admin must remove cluster %q", err, m.ClusterID))
		return nil
	}
	return cli.Refused(access.Explain(err, m.URL), "make the broker reachable and run again, or pass --force to remove the components anyway",
		"cannot remove cluster %q from the broker; nothing was changed", m.ClusterID)
}

// Uninstall removes everything of tunnelmesh from c, and nothing else: it
// leaves the clusterset first when c is a member (see Force), deletes the
// objects meshctl created (kube.Owned: never one that existed before), the
// namespace tunnelmesh-system with all in it, what the components made
// elsewhere (ServiceImports, derived Services, EndpointSlices and
// ClusterProperties marked as the export controller's, verify and benchmark
// runs), the Corefile edit and the node labels meshctl added. The shared
// CRDs (MCS, ClusterProperty) stay unless DeleteCRDs, and even then only
// those tunnelmesh created.
func Uninstall(ctx context.Context, c *kube.Cluster, o LeaveOptions) error {
	o.defaults()
	p := o.Progress
	p.Info("Removing tunnelmesh from %s", c.Describe())
	m, err := access.ReadMember(ctx, c)
	if err != nil {
		return cli.Refused(err, "check your access to Secrets in "+defaults.Namespace, "cannot read this cluster's membership")
	}
	if m != nil {
		if err := p.Run(fmt.Sprintf("Removing cluster %q from the broker", m.ClusterID), func(s *progress.Step) error {
			return removeFromBroker(ctx, m, o.Force, s)
		}); err != nil {
			return err
		}
	}
	objs, err := Objects(o.Manifests)
	if err != nil {
		return err
	}
	var crds, rest []*unstructured.Unstructured
	for _, obj := range objs {
		switch obj.GetKind() {
		case "CustomResourceDefinition":
			if !SharedCRD(obj) || o.DeleteCRDs {
				crds = append(crds, obj)
			}
		case "Namespace":
		default:
			rest = append(rest, obj)
		}
	}
	_, nsErr := c.Client.CoreV1().Namespaces().Get(ctx, defaults.Namespace, metav1.GetOptions{})
	if err := p.Run("Deleting tunnelmesh's components", func(*progress.Step) error {
		_, err := c.DeleteOwned(ctx, rest)
		return err
	}); err != nil {
		return cli.Failed(err, "run uninstall again; it resumes", "uninstall stopped")
	}
	if !apierrors.IsNotFound(nsErr) {
		if err := p.Run("Cleaning the nodes", func(s *progress.Step) error { return cleanNodes(ctx, c, o.Timeout, s) }); err != nil {
			return err
		}
	}
	err = p.Run("Deleting the namespace "+defaults.Namespace, func(s *progress.Step) error {
		// The namespace, with all in it (the namespace controller would too).
		inNS, err := c.Find(ctx, "", defaults.Namespace)
		if err != nil {
			return err
		}
		if err := c.DeleteFound(ctx, inNS); err != nil {
			return err
		}
		err = c.Client.CoreV1().Namespaces().Delete(ctx, defaults.Namespace, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if err := restoreDNS(ctx, c); err != nil {
			return err
		}
		return c.UnlabelNodes(ctx, kube.GatewayLabel, kube.BrokerLabel)
	})
	if err != nil {
		return cli.Failed(err, "run uninstall again; it resumes", "uninstall stopped")
	}
	wctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	err = p.Run("Waiting for the namespace "+defaults.Namespace+" to go", func(s *progress.Step) error {
		for {
			_, err := c.Client.CoreV1().Namespaces().Get(wctx, defaults.Namespace, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			select {
			case <-wctx.Done():
				return &cli.Error{Code: cli.ExitTimeout, What: "namespace " + defaults.Namespace + " is still terminating",
					Fix: "see what holds it: kubectl get namespace " + defaults.Namespace + " -o yaml (status.conditions); then run uninstall again"}
			case <-time.After(500 * time.Millisecond):
			}
		}
	})
	if err != nil {
		return err
	}
	// Only now: the export controller is gone and cannot make them again.
	err = p.Run("Deleting what tunnelmesh made elsewhere", func(s *progress.Step) error {
		n, err := deleteMade(ctx, c)
		if err != nil {
			return err
		}
		kept, err := c.DeleteOwned(ctx, crds)
		if err != nil {
			return err
		}
		msg := fmt.Sprintf("%d objects", n)
		if len(kept) > 0 {
			msg += "; kept " + strings.Join(kept, ", ") + " (not created by tunnelmesh)"
		}
		if !o.DeleteCRDs {
			msg += "; the MCS and ClusterProperty CRDs stay (other software may use them): --delete-crds removes those tunnelmesh created"
		}
		s.Done(msg)
		return nil
	})
	if err != nil {
		return cli.Failed(err, "run uninstall again; it resumes", "uninstall stopped")
	}
	return nil
}

// deleteMade deletes, in every namespace, what the export controller made
// (labelled as its own: a mark only it sets) and what verify and benchmark
// runs left; kinds that are not served (a CRD already gone) are skipped.
func deleteMade(ctx context.Context, c *kube.Cluster) (int, error) {
	byController := export.LabelManagedBy + "=" + export.ManagedBy
	made := []struct {
		gvr      schema.GroupVersionResource
		selector string
	}{
		{schema.GroupVersionResource{Group: "multicluster.x-k8s.io", Version: "v1beta1", Resource: "serviceimports"}, byController},
		{schema.GroupVersionResource{Version: "v1", Resource: "services"}, byController},
		{schema.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}, discoveryv1.LabelManagedBy + "=" + export.ManagedBy},
		{export.ClusterPropertyGVR, byController},
		{schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, probe.RunLabel},
	}
	var found []kube.Found
	for _, m := range made {
		l, err := c.Dynamic.Resource(m.gvr).List(ctx, metav1.ListOptions{LabelSelector: m.selector})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("list %s: %w", m.gvr.Resource, err)
		}
		for _, it := range l.Items {
			found = append(found, kube.Found{GVR: m.gvr, Namespace: it.GetNamespace(), Name: it.GetName()})
		}
	}
	return len(found), c.DeleteFound(ctx, found)
}
