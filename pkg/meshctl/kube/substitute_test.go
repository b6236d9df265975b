package kube

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestSubstitute(t *testing.T) {
	in := &unstructured.Unstructured{Object: map[string]any{"kind": "Role", "metadata": map[string]any{"name": "r"},
		"rules": []any{map[string]any{"resourceNames": []any{"${CLUSTER_ID}"}}},
		"args":  []any{"--cluster-id=${CLUSTER_ID}", "--other=$(NODE_NAME)"}}}
	out := Substitute([]*unstructured.Unstructured{in}, map[string]string{"CLUSTER_ID": "east"})
	rules := out[0].Object["rules"].([]any)
	if got := rules[0].(map[string]any)["resourceNames"].([]any)[0]; got != "east" {
		t.Errorf("resourceNames[0] = %v", got)
	}
	if args := out[0].Object["args"].([]any); args[0] != "--cluster-id=east" || args[1] != "--other=$(NODE_NAME)" {
		t.Errorf("args = %v", args)
	}
	if in.Object["args"].([]any)[0] != "--cluster-id=${CLUSTER_ID}" {
		t.Error("the input was changed")
	}
}
