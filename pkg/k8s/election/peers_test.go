package election

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestCandidatePeersListsLabelledNodesInternalIPs(t *testing.T) {
	c := newCluster(t)
	client := c.env.Client(t)
	node := func(name string, labelled bool, addrs ...corev1.NodeAddress) {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if labelled {
			n.Labels = map[string]string{CandidateLabel: "true"}
		}
		got, err := client.CoreV1().Nodes().Create(t.Context(), n, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got.Status.Addresses = addrs
		if _, err := client.CoreV1().Nodes().UpdateStatus(t.Context(), got, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	node("gw-1", true, corev1.NodeAddress{Type: corev1.NodeHostName, Address: "gw-1"}, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.1.0.5"})
	node("gw-2", true, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "fd00::7"})
	node("worker", false, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.1.0.9"})
	node("gw-noaddr", true)
	got, err := CandidatePeers(client, DefaultGossipPort)(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.1.0.5:7947", "[fd00::7]:7947"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("peers %v; want %v", got, want)
	}
}
