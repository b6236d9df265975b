package member

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
)

// DaemonSetsReady is the Waiter used until the status CRD tells tunnel
// state: every DaemonSet of tunnelmesh-system has all its pods ready.
type DaemonSetsReady struct{}

// Wait polls until the DaemonSets are ready, or fails early when a pod
// cannot get its image.
func (DaemonSetsReady) Wait(ctx context.Context, c *kube.Cluster, _ string, s *progress.Step) error {
	for {
		list, err := c.Client.AppsV1().DaemonSets(defaults.Namespace).List(ctx, metav1.ListOptions{})
		if err == nil {
			if len(list.Items) == 0 {
				s.Status("no DaemonSet to wait for")
				return nil
			}
			status, ready := daemonSetsStatus(list.Items)
			if ready {
				return nil
			}
			why := kube.PodsProblem(ctx, c, defaults.Namespace, "") // every pod of our namespace
			if why.ImageMissing != "" {
				return cli.Failed(nil, "build the images with `make images` and load them (kind: `kind load docker-image "+why.ImageMissing+" --name CLUSTER`)",
					"node %s cannot get the image %s", why.Node, why.ImageMissing)
			}
			if why.Text != "" {
				status += "; " + why.Text
			}
			s.Status("%s", status)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the DaemonSets: %w", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// daemonSetsStatus summarises DaemonSets ("gateway 1/2 ready") and tells
// whether all are ready.
func daemonSetsStatus(ds []appsv1.DaemonSet) (string, bool) {
	var parts []string
	all := true
	for _, d := range ds {
		st := d.Status
		ready := st.ObservedGeneration >= d.Generation && st.DesiredNumberScheduled > 0 &&
			st.NumberReady == st.DesiredNumberScheduled && st.UpdatedNumberScheduled == st.DesiredNumberScheduled
		all = all && ready
		parts = append(parts, fmt.Sprintf("%s %d/%d ready", d.Name, st.NumberReady, st.DesiredNumberScheduled))
	}
	return strings.Join(parts, ", "), all
}
