package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func waiting(name, node, reason, image string) corev1.Pod {
	return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{NodeName: node},
		Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Image: image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}}}}}
}

func TestDiagnose(t *testing.T) {
	got := Diagnose([]corev1.Pod{waiting("gw-b", "n2", "ContainerCreating", "tunnelmesh/gateway:dev"), waiting("gw-a", "n1", "ContainerCreating", "x")})
	if got.Text != "pod gw-a: ContainerCreating; pod gw-b: ContainerCreating" || got.ImageMissing != "" {
		t.Errorf("creating: %+v", got)
	}
	got = Diagnose([]corev1.Pod{waiting("gw-a", "n1", "ContainerCreating", "x"), waiting("gw-b", "n2", "ErrImageNeverPull", "tunnelmesh/gateway:dev")})
	if got.ImageMissing != "tunnelmesh/gateway:dev" || got.Node != "n2" {
		t.Errorf("image missing: %+v", got)
	}
	unsched := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Status: corev1.PodStatus{Phase: corev1.PodPending,
		Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Message: "0/1 nodes match"}}}}
	if got = Diagnose([]corev1.Pod{unsched}); got.Text != "pod b: unschedulable: 0/1 nodes match" {
		t.Errorf("unschedulable: %+v", got)
	}
}
