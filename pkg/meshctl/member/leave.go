package member

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
)

// LeaveOptions configure Leave and Uninstall.
type LeaveOptions struct {
	// Force goes on when the broker cannot be told (unreachable broker):
	// the cluster's record then stays there until the admin removes it.
	Force bool
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
// the components join installed and its credential are removed. A
// broker deployed in c stays. It reports false when c was not a member.
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
	err = p.Run("Removing the components", func(*progress.Step) error {
		objs, err := Objects(o.Manifests)
		if err != nil {
			return err
		}
		var keep []int
		for i, obj := range objs {
			// The namespace and CRDs go only with uninstall: a broker or
			// other users' ServiceExports may live on.
			if k := obj.GetKind(); k == "Namespace" || k == "CustomResourceDefinition" {
				keep = append(keep, i)
			}
		}
		for i := len(keep) - 1; i >= 0; i-- {
			objs = append(objs[:keep[i]], objs[keep[i]+1:]...)
		}
		if _, err := c.Delete(ctx, objs); err != nil {
			return err
		}
		err = c.Client.CoreV1().Secrets(defaults.Namespace).Delete(ctx, kube.BrokerSecret, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if err := restoreDNS(ctx, c); err != nil {
			return err
		}
		return unlabelNodes(ctx, c, kube.GatewayLabel)
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

func unlabelNodes(ctx context.Context, c *kube.Cluster, labels ...string) error {
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, n := range nodes.Items {
		drop := map[string]any{}
		for _, l := range labels {
			if _, ok := n.Labels[l]; ok {
				drop[l] = nil
			}
		}
		if len(drop) == 0 {
			continue
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": drop}})
		if _, err := c.Client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("unlabel node %s: %w", n.Name, err)
		}
	}
	return nil
}

// Uninstall removes everything of tunnelmesh from c: it leaves the
// clusterset first when c is a member (see Force), then deletes every
// object labelled app.kubernetes.io/part-of=tunnelmesh (the broker, CRDs
// and ClusterRoles included), everything in tunnelmesh-system and the
// namespace, and the node labels; it waits for the namespace to go.
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
	err = p.Run("Deleting tunnelmesh objects", func(s *progress.Step) error {
		found, err := c.Find(ctx, kube.PartOfLabel+"="+kube.PartOf, defaults.Namespace)
		if err != nil {
			return err
		}
		if err := c.DeleteFound(ctx, found); err != nil {
			return err
		}
		// The namespace itself, labelled or not.
		err = c.Client.CoreV1().Namespaces().Delete(ctx, defaults.Namespace, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if err := restoreDNS(ctx, c); err != nil {
			return err
		}
		if err := unlabelNodes(ctx, c, kube.GatewayLabel, kube.BrokerLabel); err != nil {
			return err
		}
		s.Done(fmt.Sprintf("%d objects", len(found)))
		return nil
	})
	if err != nil {
		return cli.Failed(err, "run uninstall again; it resumes", "uninstall stopped")
	}
	wctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	return p.Run("Waiting for the namespace "+defaults.Namespace+" to go", func(s *progress.Step) error {
		for {
			_, err := c.Client.CoreV1().Namespaces().Get(wctx, defaults.Namespace, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			select {
			case <-wctx.Done():
				return &cli.Error{Code: cli.ExitTimeout, What: "namespace " + defaults.Namespace + " is still terminating",
					Fix: "see what holds it: kubectl get namespace " + defaults.Namespace + " -o yaml (status.conditions)"}
			case <-time.After(500 * time.Millisecond):
			}
		}
	})
}
