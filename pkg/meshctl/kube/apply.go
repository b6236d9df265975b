package kube

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

// PartOfLabel marks every object meshctl installs, for people and selectors;
// ownership is recorded apart (CreatedByAnnotation): users set this label too.
const (
	PartOfLabel = "app.kubernetes.io/part-of"
	PartOf      = "tunnelmesh"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// Decode splits multi-document YAML into objects, skipping empty documents.
func Decode(data []byte, source string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		out = append(out, u)
	}
}

// Manifests reads the objects of a kustomize directory tree: it follows the
// `resources:` of each kustomization.yaml (files and directories), so what
// meshctl applies is exactly what `kubectl apply -k dir` would.
func Manifests(fsys fs.FS, dir string) ([]*unstructured.Unstructured, error) {
	b, err := fs.ReadFile(fsys, path.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, fmt.Errorf("read %s/kustomization.yaml: %w", dir, err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("%s/kustomization.yaml: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range k.Resources {
		p := path.Join(dir, r)
		st, err := fs.Stat(fsys, p)
		if err != nil {
			return nil, fmt.Errorf("%s/kustomization.yaml: resource %s: %w", dir, r, err)
		}
		var objs []*unstructured.Unstructured
		if st.IsDir() {
			objs, err = Manifests(fsys, p)
		} else {
			var data []byte
			if data, err = fs.ReadFile(fsys, p); err == nil {
				objs, err = Decode(data, p)
			}
		}
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

// Prepare labels every object as part of tunnelmesh, marks it as created by
// meshctl (MarkOwned; see SortOut before applying), drops duplicates
// (the later one wins) and orders them for apply: namespaces, then CRDs,
// then the rest in their given order.
func Prepare(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	idx := map[string]int{}
	var uniq []*unstructured.Unstructured
	for _, o := range objs {
		o = o.DeepCopy()
		l := o.GetLabels()
		if l == nil {
			l = map[string]string{}
		}
		l[PartOfLabel] = PartOf
		o.SetLabels(l)
		MarkOwned([]*unstructured.Unstructured{o})
		k := Key(o)
		if i, ok := idx[k]; ok {
			uniq[i] = o
			continue
		}
		idx[k] = len(uniq)
		uniq = append(uniq, o)
	}
	rank := func(o *unstructured.Unstructured) int {
		switch o.GroupVersionKind().GroupKind().String() {
		case "Namespace":
			return 0
		case "CustomResourceDefinition.apiextensions.k8s.io":
			return 1
		}
		return 2
	}
	sort.SliceStable(uniq, func(i, j int) bool { return rank(uniq[i]) < rank(uniq[j]) })
	return uniq
}

// Key names an object: Kind.group/namespace/name.
func Key(o *unstructured.Unstructured) string {
	return o.GroupVersionKind().GroupKind().String() + "/" + o.GetNamespace() + "/" + o.GetName()
}

// Resource returns the dynamic client for o's kind (namespaced if it is).
func (c *Cluster) Resource(o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		c.mapper.Reset()
		m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", gvk, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.Dynamic.Resource(m.Resource).Namespace(o.GetNamespace()), nil
	}
	return c.Dynamic.Resource(m.Resource), nil
}

// Apply server-side-applies objs in order (see Prepare) and waits for each
// CRD to be established before the objects that may use it.
func (c *Cluster) Apply(ctx context.Context, objs []*unstructured.Unstructured) error {
	for _, o := range objs {
		ri, err := c.Resource(o)
		if err != nil {
			return fmt.Errorf("apply %s: %w", Key(o), err)
		}
		data, err := json.Marshal(o)
		if err != nil {
			return err
		}
		force := true
		if _, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data,
			metav1.PatchOptions{FieldManager: FieldManager, Force: &force}); err != nil {
			return fmt.Errorf("apply %s: %w", Key(o), err)
		}
		if o.GroupVersionKind().Kind == "CustomResourceDefinition" {
			if err := c.waitEstablished(ctx, o.GetName()); err != nil {
				return err
			}
			c.mapper.Reset()
		}
	}
	return nil
}

func (c *Cluster) waitEstablished(ctx context.Context, name string) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		u, err := c.Dynamic.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return ConditionTrue(u, "Established"), nil
	})
	if err != nil {
		return fmt.Errorf("CRD %s not established: %w", name, err)
	}
	return nil
}

// Delete deletes objs in reverse order; missing ones are fine. It returns
// how many it deleted.
func (c *Cluster) Delete(ctx context.Context, objs []*unstructured.Unstructured) (int, error) {
	n := 0
	for i := len(objs) - 1; i >= 0; i-- {
		o := objs[i]
		ri, err := c.Resource(o)
		if meta.IsNoMatchError(errors.Unwrap(err)) {
			continue // its CRD is gone already
		}
		if err != nil {
			return n, err
		}
		bg := metav1.DeletePropagationBackground
		err = ri.Delete(ctx, o.GetName(), metav1.DeleteOptions{PropagationPolicy: &bg})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("delete %s: %w", Key(o), err)
		}
		n++
	}
	return n, nil
}

// ConditionTrue reports whether u's status.conditions has typ=True.
func ConditionTrue(u *unstructured.Unstructured, typ string) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ && m["status"] == "True" {
			return true
		}
	}
	return false
}

// Substitute returns copies of objs with every ${NAME} in their string
// values replaced by vars[NAME] (the manifests name, e.g., the cluster's own
// MeshGateway in RBAC rules as ${CLUSTER_ID}).
func Substitute(objs []*unstructured.Unstructured, vars map[string]string) []*unstructured.Unstructured {
	var pairs []string
	for k, v := range vars {
		pairs = append(pairs, "${"+k+"}", v)
	}
	r := strings.NewReplacer(pairs...)
	var walk func(v any) any
	walk = func(v any) any {
		switch t := v.(type) {
		case string:
			return r.Replace(t)
		case map[string]any:
			for k, e := range t {
				t[k] = walk(e)
			}
		case []any:
			for i, e := range t {
				t[i] = walk(e)
			}
		}
		return v
	}
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		c := o.DeepCopy()
		walk(c.Object)
		out = append(out, c)
	}
	return out
}
