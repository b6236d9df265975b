package brokerdeploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/testenv"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
)

// TestInCluster deploys the broker into a real API server; a stand-in
// kubelet runs the real broker binary exactly as the Deployment says
// (args, Secret items, hostPath), so the manifest is proven to work.
func TestInCluster(t *testing.T) {
	c := testenv.Start(t, "broker-cluster")
	bin := testenv.BrokerBinary(t)
	c.AddNode(t, "plain-node", true, "127.0.0.1") // reports only pause: images missing
	ctx := t.Context()

	// Refused before changing anything: the image is not on the node.
	before := c.Objects(t)
	_, err := InCluster(ctx, c.Kube, Options{Node: "plain-node", InfoFile: filepath.Join(t.TempDir(), "x.json")})
	var ce *cli.Error
	if !errors.As(err, &ce) || ce.Code != cli.ExitRefused || !strings.Contains(ce.Fix, "kind load docker-image tunnelmesh/broker:dev") {
		t.Fatalf("missing image: got %v", err)
	}
	if d := testenv.Diff(before, c.Objects(t)); d != "" {
		t.Fatalf("refused deploy changed the cluster:\n%s", d)
	}

	c.AddNode(t, "broker-node", true, "127.0.0.1", "tunnelmesh/broker:dev")
	addr := testenv.FreeAddr(t)
	hostRoot := t.TempDir()
	kubelet := func() (stop func()) {
		d := c.WaitDeployment(t, defaults.Namespace, "tunnelmesh-broker")
		if got := d.Spec.Template.Spec.NodeSelector[kube.BrokerLabel]; got != "true" {
			t.Errorf("nodeSelector %v", d.Spec.Template.Spec.NodeSelector)
		}
		stop = c.RunPod(t, d, bin, hostRoot, addr)
		c.MarkDeploymentReady(t, d)
		return stop
	}
	stopc := make(chan func(), 1)
	go func() { stopc <- kubelet() }()

	info := filepath.Join(t.TempDir(), "broker-info.json")
	var log bytes.Buffer
	res, err := InCluster(ctx, c.Kube, Options{Node: "broker-node", BrokerURL: "https://" + addr, InfoFile: info,
		Timeout: 2 * time.Minute, Progress: progress.New(&log, false)})
	stopPod := <-stopc
	if err != nil {
		t.Fatalf("deploy: %v\n%s", err, log.String())
	}
	t.Logf("progress:\n%s", log.String())
	if res.ReusedPKI {
		t.Error("first deploy claims to reuse the PKI")
	}
	st, err := os.Stat(info)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("info file: %v mode %v", err, st.Mode())
	}
	var bi api.BrokerInfo
	b, _ := os.ReadFile(info)
	if err := json.Unmarshal(b, &bi); err != nil || bi.URL != "https://"+addr || bi.JoinToken == "" {
		t.Fatalf("info %s: %v", b, err)
	}
	sec, err := c.Client.CoreV1().Secrets(defaults.Namespace).Get(ctx, kube.BrokerPKISecret, metav1.GetOptions{})
	if err != nil || string(sec.Data["ca.crt"]) != bi.CA {
		t.Fatalf("Secret CA differs from the info's: %v", err)
	}
	n, _ := c.Client.CoreV1().Nodes().Get(ctx, "broker-node", metav1.GetOptions{})
	if n.Labels[kube.BrokerLabel] != "true" {
		t.Errorf("broker node not labelled: %v", n.Labels)
	}
	join := func(info api.BrokerInfo, id, pod string) error {
		bc, err := brokerclient.New(info.URL, []byte(info.CA), "")
		if err != nil {
			return err
		}
		_, err = bc.Join(ctx, info.JoinToken, api.JoinRequest{ClusterID: id, PodCIDRs: []string{pod}, ServiceCIDRs: []string{"10.96." + id[len(id)-1:] + ".0/24"}})
		return err
	}
	if err := join(bi, "c1", "10.1.0.0/16"); err != nil {
		t.Fatalf("join with the written token: %v", err)
	}

	// The pod is deleted and comes back: the data (the joined cluster) survives on the host path.
	stopPod()
	d := c.WaitDeployment(t, defaults.Namespace, "tunnelmesh-broker")
	c.RunPod(t, d, bin, hostRoot, addr)

	// A second run reuses the PKI and only makes a new token.
	res2, err := InCluster(ctx, c.Kube, Options{BrokerURL: "https://" + addr, InfoFile: info, Timeout: time.Minute})
	if err != nil {
		t.Fatalf("second deploy: %v", err)
	}
	sec2, _ := c.Client.CoreV1().Secrets(defaults.Namespace).Get(ctx, kube.BrokerPKISecret, metav1.GetOptions{})
	if !res2.ReusedPKI || sec2.ResourceVersion != sec.ResourceVersion || res2.Info.CA != bi.CA {
		t.Errorf("second run replaced the PKI")
	}
	if res2.Info.JoinToken == bi.JoinToken || res2.Node != "broker-node" {
		t.Errorf("second run: token reused or node changed (%s)", res2.Node)
	}
	admin, _ := brokerclient.New(bi.URL, []byte(bi.CA), string(sec.Data["admin.token"]))
	snap, err := admin.Snapshot(ctx)
	if err != nil || len(snap.Clusters) != 1 || snap.Clusters[0].ID != "c1" {
		t.Fatalf("cluster joined before the pod restart is gone: %v %+v", err, snap)
	}
	if err := join(res2.Info, "c2", "10.2.0.0/16"); err != nil {
		t.Fatalf("join with the second token: %v", err)
	}

	// Moving the broker to another node would lose its data: refused.
	before = c.Objects(t)
	_, err = InCluster(ctx, c.Kube, Options{Node: "plain-node", BrokerURL: "https://" + addr, InfoFile: info})
	if !errors.As(err, &ce) || ce.Code != cli.ExitRefused || !strings.Contains(ce.What, "data lives on node broker-node") {
		t.Fatalf("move: %v", err)
	}
	if d := testenv.Diff(before, c.Objects(t)); d != "" {
		t.Fatalf("refused deploy changed the cluster:\n%s", d)
	}

	// A URL the certificate does not cover is refused, nothing changed.
	before = c.Objects(t)
	_, err = InCluster(ctx, c.Kube, Options{BrokerURL: "https://192.0.2.7:1234", InfoFile: info})
	if !errors.As(err, &ce) || ce.Code != cli.ExitRefused || !strings.Contains(ce.What, "does not cover 192.0.2.7") {
		t.Fatalf("uncovered URL: %v", err)
	}
	if d := testenv.Diff(before, c.Objects(t)); d != "" {
		t.Fatalf("refused deploy changed the cluster:\n%s", d)
	}
}
