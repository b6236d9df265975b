package member

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
)

// CleanupDaemonSet runs `gateway cleanup` on every node (deploy/cleanup).
const CleanupDaemonSet = "tunnelmesh-cleanup"

// gatewayPods selects the pods that put state on the nodes.
const gatewayPods = "app.kubernetes.io/part-of=tunnelmesh,app.kubernetes.io/component in (gateway,route-agent)"

// cleanNodes takes off every node what the gateway and the route agents put
// there (pkg/nodeclean): once their pods are gone (they leave their state in
// place on a stop), it runs the cleanup DaemonSet until it is ready on every
// node, then deletes it. Nodes it could not clean are named in the error.
func cleanNodes(ctx context.Context, c *kube.Cluster, timeout time.Duration, s *progress.Step) error {
	ds, err := cleanupObject()
	if err != nil {
		return err
	}
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	ran := false
	for i := range nodes.Items {
		ran = ran || len(kube.MissingImages(&nodes.Items[i], kube.Images([]*unstructured.Unstructured{ds}))) == 0
	}
	if !ran {
		s.Skip("no node has the gateway image: the gateway never ran here")
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pods := c.Client.CoreV1().Pods(defaults.Namespace)
	for {
		l, err := pods.List(wctx, metav1.ListOptions{LabelSelector: gatewayPods})
		if err == nil && len(l.Items) == 0 {
			break
		}
		if err == nil {
			s.Status("waiting for %d gateway pod(s) to stop", len(l.Items))
		}
		select {
		case <-wctx.Done():
			return &cli.Error{Code: cli.ExitTimeout, What: "the gateway's pods did not stop in time; the nodes were not cleaned",
				Fix: "see them: kubectl -n " + defaults.Namespace + " get pods -l '" + gatewayPods + "'; then run this again"}
		case <-time.After(500 * time.Millisecond):
		}
	}
	if err := c.Apply(ctx, []*unstructured.Unstructured{ds}); err != nil {
		return fmt.Errorf("start the node cleanup: %w", err)
	}
	dss := c.Client.AppsV1().DaemonSets(defaults.Namespace)
	defer func() {
		bg := metav1.DeletePropagationBackground
		if err := dss.Delete(context.WithoutCancel(ctx), CleanupDaemonSet, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
			s.Status("could not delete DaemonSet %s: %v", CleanupDaemonSet, err)
		}
	}()
	for {
		d, err := dss.Get(wctx, CleanupDaemonSet, metav1.GetOptions{})
		if err == nil && cleaned(d) {
			s.Done(fmt.Sprintf("%d node(s) clean", d.Status.DesiredNumberScheduled))
			return nil
		}
		if err == nil {
			s.Status("%d of %d node(s) clean", d.Status.NumberReady, d.Status.DesiredNumberScheduled)
		}
		select {
		case <-wctx.Done():
			return &cli.Error{Code: cli.ExitTimeout, What: "some nodes were not cleaned in time: " + notCleaned(ctx, c),
				Cause: errors.New("their cleanup pods did not finish"),
				Fix: "see why: kubectl -n " + defaults.Namespace + " logs -l app.kubernetes.io/name=" + CleanupDaemonSet +
					" -c cleanup; run this again when those nodes are up (or clean them by hand: README, Node prerequisites)"}
		case <-time.After(time.Second):
		}
	}
}

func cleanupObject() (*unstructured.Unstructured, error) {
	b, err := deploy.FS.ReadFile("cleanup/daemonset.yaml")
	if err != nil {
		return nil, err
	}
	objs, err := kube.Decode(b, "cleanup/daemonset.yaml")
	if err != nil {
		return nil, err
	}
	return kube.Prepare(objs)[0], nil
}

// cleaned: every node the DaemonSet runs on has its pod ready, i.e. its
// cleanup init container done.
func cleaned(d *appsv1.DaemonSet) bool {
	st := d.Status
	return st.ObservedGeneration >= d.Generation && st.DesiredNumberScheduled > 0 &&
		st.NumberReady == st.DesiredNumberScheduled && st.UpdatedNumberScheduled == st.DesiredNumberScheduled
}

func notCleaned(ctx context.Context, c *kube.Cluster) string {
	l, err := c.Client.CoreV1().Pods(defaults.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + CleanupDaemonSet})
	if err != nil {
		return err.Error()
	}
	var nodes []string
	for _, p := range l.Items {
		ready := false
		for _, cs := range p.Status.Conditions {
			ready = ready || (cs.Type == "Ready" && cs.Status == "True")
		}
		if !ready {
			nodes = append(nodes, p.Spec.NodeName)
		}
	}
	sort.Strings(nodes)
	if len(nodes) == 0 {
		return "(no cleanup pod scheduled yet)"
	}
	return strings.Join(nodes, ", ")
}
