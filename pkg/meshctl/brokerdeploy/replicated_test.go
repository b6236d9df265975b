package brokerdeploy

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store/etcdtest"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/testenv"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
)

func brokerDeployment(t *testing.T, e EtcdOptions, replicas int, tls bool) appsv1.Deployment {
	t.Helper()
	objs, err := Objects()
	if err != nil {
		t.Fatal(err)
	}
	var tlsData map[string][]byte
	if tls { // as etcdSecretData reads the files
		tlsData = map[string][]byte{}
		for f, k := range map[string]string{e.CAFile: "ca.crt", e.CertFile: "client.crt", e.KeyFile: "client.key"} {
			if f != "" {
				tlsData[k] = []byte("x")
			}
		}
	}
	if err := replicate(objs, replicas, e, tlsData); err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			var d appsv1.Deployment
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
				t.Fatal(err)
			}
			return d
		}
	}
	t.Fatal("no Deployment")
	return appsv1.Deployment{}
}

func TestReplicate(t *testing.T) {
	for _, c := range []struct {
		name     string
		e        EtcdOptions
		tls      bool
		wantArgs []string
	}{
		{"plain", EtcdOptions{Endpoints: []string{"http://e0:2379", "http://e1:2379"}}, false,
			[]string{"--store=etcd", "--etcd-endpoints=http://e0:2379,http://e1:2379", "--etcd-prefix=/tunnelmesh"}},
		{"tls and prefix", EtcdOptions{Endpoints: []string{"https://e:2379"}, Prefix: "/tm", CAFile: "x", CertFile: "y", KeyFile: "z", MaxTxnOps: 512}, true,
			[]string{"--store=etcd", "--etcd-endpoints=https://e:2379", "--etcd-prefix=/tm", "--etcd-max-txn-ops=512",
				"--etcd-ca=" + etcdMountPath + "/ca.crt", "--etcd-cert=" + etcdMountPath + "/client.crt", "--etcd-key=" + etcdMountPath + "/client.key"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := brokerDeployment(t, c.e, 3, c.tls)
			ps := d.Spec.Template.Spec
			if *d.Spec.Replicas != 3 || d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ps.NodeSelector != nil {
				t.Fatalf("replicas %d, strategy %s, nodeSelector %v", *d.Spec.Replicas, d.Spec.Strategy.Type, ps.NodeSelector)
			}
			args := ps.Containers[0].Args
			if !slices.Equal(args[len(args)-len(c.wantArgs):], c.wantArgs) {
				t.Fatalf("args %v, want them to end with %v", args, c.wantArgs)
			}
			hasEtcdVol := false
			for _, v := range ps.Volumes {
				if v.HostPath != nil {
					t.Errorf("volume %s still a hostPath", v.Name)
				}
				hasEtcdVol = hasEtcdVol || (v.Secret != nil && v.Secret.SecretName == etcdSecretName)
			}
			if hasEtcdVol != c.tls {
				t.Errorf("etcd Secret volume %v, want %v", hasEtcdVol, c.tls)
			}
			if ps.Affinity == nil || ps.Affinity.PodAntiAffinity == nil {
				t.Error("replicas not spread over nodes")
			}
		})
	}
}

// TestInClusterReplicatedOnEtcd deploys two broker replicas sharing a real
// etcd into a real API server; the stand-in kubelet runs each pod with the
// real broker binary as the Deployment says. A cluster joins through the
// broker-info (both URLs); with one replica gone the other still serves
// the same records.
func TestInClusterReplicatedOnEtcd(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	c := testenv.Start(t, "broker-etcd")
	bin := testenv.BrokerBinary(t)
	c.AddNode(t, "n1", true, "127.0.0.1", "tunnelmesh/broker:dev")
	ctx := t.Context()
	addrs := []string{testenv.FreeAddr(t), testenv.FreeAddr(t)}
	stops := make(chan []func(), 1)
	go func() {
		d := c.WaitDeployment(t, defaults.Namespace, "tunnelmesh-broker")
		var s []func()
		for _, a := range addrs {
			s = append(s, c.RunPod(t, d, bin, t.TempDir(), a))
		}
		c.MarkDeploymentReady(t, d)
		stops <- s
	}()
	info := filepath.Join(t.TempDir(), "broker-info.json")
	var log bytes.Buffer
	_, err := InCluster(ctx, c.Kube, Options{BrokerURL: "https://" + addrs[0] + ",https://" + addrs[1], InfoFile: info,
		Replicas: 2, Etcd: EtcdOptions{Endpoints: ec.Endpoints(), Prefix: "/deployed", MaxTxnOps: etcdtest.MaxTxnOps},
		Timeout: 2 * time.Minute, Progress: progress.New(&log, false)})
	stop := <-stops
	if err != nil {
		t.Fatalf("deploy: %v\n%s", err, log.String())
	}
	d := c.WaitDeployment(t, defaults.Namespace, "tunnelmesh-broker")
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas %d", *d.Spec.Replicas)
	}
	n, _ := c.Client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if n.Labels[kube.BrokerLabel] != "" {
		t.Errorf("node labelled as holding the broker's data: %v", n.Labels)
	}
	var bi api.BrokerInfo
	b, _ := os.ReadFile(info)
	if err := json.Unmarshal(b, &bi); err != nil || !strings.Contains(bi.URL, ",") {
		t.Fatalf("info %s: %v", b, err)
	}
	bc, err := brokerclient.New(bi.URL, []byte(bi.CA), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bc.Join(ctx, bi.JoinToken, api.JoinRequest{ClusterID: "c1", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.96.1.0/24"}}); err != nil {
		t.Fatalf("join: %v", err)
	}
	stop[0]() // the replica the join went to
	deadline := time.Now().Add(20 * time.Second)
	for {
		snap, err := bc.Snapshot(ctx)
		if err == nil && len(snap.Clusters) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other replica does not serve the joined cluster: %+v %v", snap, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
