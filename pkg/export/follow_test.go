package export_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/internal/kubeapi"
	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/export"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/k8stest"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
)

// TestFollowMeshGateway: the controller, with exactly the rights
// deploy/mcs grants it, sees the active gateway's verdict on each tunnel
// through a watch: a broken tunnel makes its cluster unreachable, a mended
// one reachable again, and a deleted status changes nothing.
func TestFollowMeshGateway(t *testing.T) {
	env := kubeapi.Start(t)
	objs, err := k8stest.Files(deploy.FS, "namespace.yaml", "gateway/crd-meshgateways.yaml")
	if err != nil {
		t.Fatal(err)
	}
	k8stest.Apply(t, env.Config, objs)
	admin := dynamic.NewForConfigOrDie(env.Config)
	rbac, err := deploy.FS.ReadFile("mcs/controller-rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	applyYAML(t, admin, rbac)
	ctrl := dynamic.NewForConfigOrDie(k8stest.Impersonate(env.Config, defaults.Namespace, "tunnelmesh-controller"))

	w := status.Writer{Client: admin, ClusterID: "east"}
	write := func(westStatus string) {
		t.Helper()
		st := status.GatewayStatus{ActiveNode: "east-gw", Epoch: 1, Remotes: []status.RemoteCluster{
			{Cluster: "west", Status: westStatus}, {Cluster: "north", Status: api.StatusConnected},
		}}
		if err := w.Write(context.Background(), st); err != nil {
			t.Fatal(err)
		}
	}
	reach := export.NewTunnels()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	write(api.StatusError) // before the follower starts: the initial list sees it
	go func() {
		defer close(done)
		export.FollowMeshGateway(ctx, ctrl, "", "east", reach, slog.Default())
	}()

	wantWest := func(up bool) {
		t.Helper()
		testkit.Eventually(t, 10*time.Second, func() error {
			if got := reach.Reachable("west"); got != up {
				return fmt.Errorf("west reachable = %v, want %v", got, up)
			}
			return nil
		})
		if !reach.Reachable("north") {
			t.Fatal("north, connected all along, is unreachable")
		}
	}
	wantWest(false)
	write(api.StatusConnected)
	wantWest(true)
	write(api.StatusError)
	wantWest(false)
	if err := admin.Resource(status.GVR).Namespace(defaults.Namespace).Delete(context.Background(), "east", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // a deletion must not flip anything; give the watch time to deliver it
	if reach.Reachable("west") {
		t.Fatal("deleting the MeshGateway made west reachable: a missing status is not evidence")
	}
}
