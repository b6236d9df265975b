package main

import (
	"reflect"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestImageRows(t *testing.T) {
	rows := imageRows([]*runtimeapi.Image{
		{Id: "sha256:0123456789abcdef0123", RepoTags: []string{"registry.k8s.io/pause:3.10.2", "localhost:5000/p:1"}, Size: 1620000},
		{Id: "sha256:fedcba9876543210", Size: 12},
	})
	want := [][]string{
		{"<none>", "<none>", "fedcba9876543", "12B"},
		{"localhost:5000/p", "1", "0123456789abc", "1.62MB"},
		{"registry.k8s.io/pause", "3.10.2", "0123456789abc", "1.62MB"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("rows = %q, want %q", rows, want)
	}
}

func TestRunRejectsUnknown(t *testing.T) {
	if err := run([]string{"rmi", "x"}, nil); err == nil {
		t.Error("unsupported command accepted")
	}
	if err := run(nil, nil); err == nil {
		t.Error("no command accepted")
	}
}
