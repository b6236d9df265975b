package kube

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PodProblem tells why pods are not ready yet.
type PodProblem struct {
	// Text is a one-line summary ("pod x: ContainerCreating").
	Text string
	// ImageMissing names an image a pod cannot get, on Node.
	ImageMissing string
	Node         string
}

// PodsProblem looks at the pods matching selector and summarises what
// keeps them from being ready; zero when it cannot tell.
func PodsProblem(ctx context.Context, c *Cluster, ns, selector string) PodProblem {
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil || len(pods.Items) == 0 {
		return PodProblem{}
	}
	return Diagnose(pods.Items)
}

// Diagnose is PodsProblem's pure part.
func Diagnose(pods []corev1.Pod) PodProblem {
	var parts []string
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	for _, p := range pods {
		for _, cs := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			if w := cs.State.Waiting; w != nil {
				switch w.Reason {
				case "ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull":
					return PodProblem{Text: fmt.Sprintf("pod %s: %s", p.Name, w.Reason), ImageMissing: cs.Image, Node: p.Spec.NodeName}
				}
				parts = append(parts, fmt.Sprintf("pod %s: %s", p.Name, w.Reason))
			}
		}
		if len(parts) == 0 && p.Status.Phase == corev1.PodPending {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
					parts = append(parts, fmt.Sprintf("pod %s: unschedulable: %s", p.Name, c.Message))
				}
			}
		}
	}
	return PodProblem{Text: strings.Join(parts, "; ")}
}
