package kubeapi

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

func TestStartServesAndWatches(t *testing.T) {
	started := time.Now()
	env := Start(t)
	t.Logf("etcd + kube-apiserver ready in %v", time.Since(started).Round(time.Millisecond))
	c := env.Client(t)
	v, err := c.Discovery().ServerVersion()
	if err != nil || v.GitVersion != "v1.36.0" {
		t.Fatalf("server version %v, %v; want v1.36.0", v, err)
	}
	ctx := t.Context()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubeapi-test"}}
	if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := c.CoreV1().ConfigMaps("kubeapi-test").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Data: map[string]string{"k": "v"}}
	if _, err := c.CoreV1().ConfigMaps("kubeapi-test").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.ResultChan():
		got, ok := ev.Object.(*corev1.ConfigMap)
		if ev.Type != watch.Added || !ok || got.Data["k"] != "v" {
			t.Fatalf("watch event %v %#v", ev.Type, ev.Object)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event for the created ConfigMap")
	}
}

func TestAPIServerOutageKeepsTheData(t *testing.T) {
	env := Start(t)
	c := env.Client(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "outage"}}
	if _, err := c.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.StopAPIServer()
	if _, err := c.CoreV1().Namespaces().Get(t.Context(), "outage", metav1.GetOptions{}); err == nil {
		t.Fatal("the stopped apiserver still answers")
	}
	env.StartAPIServer()
	if _, err := c.CoreV1().Namespaces().Get(t.Context(), "outage", metav1.GetOptions{}); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
}
