// Package svcexport exports a Service to the clusterset (an MCS
// ServiceExport) and waits until the export controller says it is Ready.
package svcexport

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
)

// Options configure Export.
type Options struct {
	// Wait for the export to be Ready (default in the CLI).
	Wait     bool
	Timeout  time.Duration
	Progress *progress.Printer
}

// Condition is one status condition of a ServiceExport.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

func serviceExport(ns, name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
		"metadata": map[string]any{"name": name, "namespace": ns}}}
}

// Export creates the ServiceExport of Service ns/name (nothing changes when
// it exists) and, with Wait, waits until it is Ready.
func Export(ctx context.Context, c *kube.Cluster, ns, name string, o Options) ([]Condition, error) {
	if o.Progress == nil {
		o.Progress = progress.Discard()
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	p := o.Progress
	se := serviceExport(ns, name)
	ri, err := c.Resource(se)
	if meta.IsNoMatchError(errors.Unwrap(err)) {
		return nil, cli.Refused(nil, "join the cluster first: meshctl join BROKER-INFO", "%s has no ServiceExport API: it has not joined a clusterset", c.Describe())
	}
	if err != nil {
		return nil, err
	}
	if _, err := c.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return nil, cli.Refused(nil, "check the name and -n NAMESPACE (`kubectl get services -n "+ns+"`)", "service %s/%s does not exist", ns, name)
	} else if err != nil {
		return nil, err
	}
	if err := c.Apply(ctx, []*unstructured.Unstructured{se}); err != nil {
		return nil, cli.Failed(err, "", "cannot create the ServiceExport %s/%s", ns, name)
	}
	p.Info("ServiceExport %s/%s created in %s", ns, name, c.Describe())
	if !o.Wait {
		return nil, nil
	}
	wctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var conds []Condition
	err = p.Run("Waiting for the export to be Ready", func(s *progress.Step) error {
		for {
			u, err := ri.Get(wctx, name, metav1.GetOptions{})
			if err == nil {
				conds = Conditions(u)
				if done, err := judge(conds, s); done || err != nil {
					return err
				}
			}
			select {
			case <-wctx.Done():
				return &cli.Error{Code: cli.ExitTimeout, What: fmt.Sprintf("ServiceExport %s/%s is not Ready after %s", ns, name, o.Timeout),
					Cause: errors.New(describe(conds)),
					Fix:   "check that the export controller runs: kubectl -n " + defaults.Namespace + " get pods; then `meshctl show exports`"}
			case <-time.After(500 * time.Millisecond):
			}
		}
	})
	return conds, err
}

// judge reads the conditions: done when Ready, an error when not Valid.
func judge(conds []Condition, s *progress.Step) (bool, error) {
	for _, c := range conds {
		if c.Type == "Valid" && c.Status == "False" {
			return true, cli.Failed(nil, "fix the Service (ExternalName services cannot be exported), or unexport it",
				"the export is invalid: %s: %s", c.Reason, c.Message)
		}
	}
	for _, c := range conds {
		if c.Type == "Conflict" && c.Status == "True" {
			s.Status("conflict: %s (the oldest export wins)", c.Reason)
		}
	}
	for _, c := range conds {
		if c.Type == "Ready" {
			if c.Status == "True" {
				return true, nil
			}
			s.Status("Ready=%s %s", c.Status, c.Reason)
		}
	}
	return false, nil
}

// Conditions returns u's status conditions, sorted by type.
func Conditions(u *unstructured.Unstructured) []Condition {
	raw, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	var out []Condition
	for _, r := range raw {
		m, _ := r.(map[string]any)
		str := func(k string) string { s, _ := m[k].(string); return s }
		out = append(out, Condition{Type: str("type"), Status: str("status"), Reason: str("reason"), Message: str("message")})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

func describe(conds []Condition) string {
	if len(conds) == 0 {
		return "no conditions yet (is the export controller running?)"
	}
	var b strings.Builder
	for _, c := range conds {
		fmt.Fprintf(&b, "%s=%s %s %s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	return strings.TrimSpace(b.String())
}

// Unexport deletes the ServiceExport; false when there was none.
func Unexport(ctx context.Context, c *kube.Cluster, ns, name string) (bool, error) {
	se := serviceExport(ns, name)
	ri, err := c.Resource(se)
	if meta.IsNoMatchError(errors.Unwrap(err)) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	err = ri.Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}
