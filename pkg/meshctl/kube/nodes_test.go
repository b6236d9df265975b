package kube

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tunnelmesh/tunnelmesh/deploy"
)

func node(name string, ready bool, labels map[string]string) corev1.Node {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}}}}
}

func TestPickNode(t *testing.T) {
	l := "tunnelmesh.io/gateway"
	nodes := []corev1.Node{node("c", true, nil), node("a", false, nil), node("b", true, nil), node("d", true, map[string]string{l: "true"})}
	cases := []struct {
		name, flag, want string
	}{
		{"flag wins", "a", "a"},
		{"labelled ready node", "", "d"},
		{"unknown flag", "zz", ""},
	}
	for _, c := range cases {
		n, _ := PickNode(nodes, c.flag, l)
		got := ""
		if n != nil {
			got = n.Name
		}
		if got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
	if n, why := PickNode(nodes[:3], "", l); n == nil || n.Name != "b" || why != "the first Ready node" {
		t.Errorf("first ready: %v %q", n, why)
	}
	if n, _ := PickNode([]corev1.Node{node("x", false, nil)}, "", l); n != nil {
		t.Errorf("no ready node: got %s", n.Name)
	}
}

func TestMissingImages(t *testing.T) {
	n := node("a", true, nil)
	if got := MissingImages(&n, []string{"x:1"}); got != nil {
		t.Errorf("no image list: %v", got)
	}
	n.Status.Images = []corev1.ContainerImage{{Names: []string{"docker.io/tunnelmesh/broker:dev", "sha256:abc"}}, {Names: []string{"docker.io/library/busybox:latest"}}}
	got := MissingImages(&n, []string{"tunnelmesh/broker:dev", "busybox", "tunnelmesh/gateway:dev"})
	if !reflect.DeepEqual(got, []string{"tunnelmesh/gateway:dev"}) {
		t.Errorf("missing = %v", got)
	}
}

func TestManifestsFollowKustomization(t *testing.T) {
	objs, err := Manifests(deploy.FS, "broker")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range Prepare(objs) {
		keys = append(keys, Key(o))
		if o.GetLabels()[PartOfLabel] != PartOf {
			t.Errorf("%s lacks the part-of label", Key(o))
		}
	}
	want := []string{"Deployment.apps/tunnelmesh-system/tunnelmesh-broker", "Service/tunnelmesh-system/tunnelmesh-broker"}
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("keys = %v, want %v", keys, want)
	}
	if imgs := Images(objs); !reflect.DeepEqual(imgs, []string{"tunnelmesh/broker:dev"}) {
		t.Errorf("images = %v", imgs)
	}
	// The whole tree (what join applies) must decode too.
	if _, err := Manifests(deploy.FS, "."); err != nil {
		t.Fatal(err)
	}
}
