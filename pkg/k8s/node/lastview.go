package node

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The active gateway keeps the view its data plane was built from (the last
// broker snapshot and, apart from it, what gossip added: gateway.StoredView)
// in a Secret, so that a standby on
// another node can build the tunnels when it takes over while the broker is
// down: the state file is per node and a standby never had the newest view.
// A Secret, not a ConfigMap: the view names every member's endpoints and
// CIDRs, and Secrets are what least-privilege readers are usually denied.
const (
	ViewSecretName = "tunnelmesh-gateway-state"
	viewKey        = "view.json.gz"
	epochAnnot     = "tunnelmesh.io/epoch"
)

// ErrStaleView: a newer active has written the view.
var ErrStaleView = errors.New("the stored view was written by a newer active gateway")

// ViewStore reads and writes the view Secret in Namespace.
type ViewStore struct {
	Client    kubernetes.Interface
	Namespace string
}

// encodeView keeps what the data plane and the status need: exports are
// left out (the gateway never reads them), which keeps large clustersets
// far under the Secret size limit.
func encodeView(v gateway.StoredView) ([]byte, error) {
	v.Base.Exports = nil
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(v); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// decodeView reads a stored view. One written before gossip was kept apart
// is a bare snapshot: it becomes the base (it may hold what gossip said,
// which the broker's next snapshot replaces).
func decodeView(b []byte) (gateway.StoredView, error) {
	var v gateway.StoredView
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return v, err
	}
	raw, err := io.ReadAll(io.LimitReader(zr, 64<<20))
	if err != nil {
		return v, err
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(raw, &probe); err != nil {
		return v, err
	}
	if _, ok := probe["base"]; !ok {
		return v, json.Unmarshal(raw, &v.Base)
	}
	return v, json.Unmarshal(raw, &v)
}

// Load returns the stored view and the epoch of the active that wrote it;
// ok is false when there is none.
func (v ViewStore) Load(ctx context.Context) (s gateway.StoredView, epoch int64, ok bool, err error) {
	sec, err := v.Client.CoreV1().Secrets(v.Namespace).Get(ctx, ViewSecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return s, 0, false, nil
	}
	if err != nil {
		return s, 0, false, fmt.Errorf("read secret %s/%s: %w", v.Namespace, ViewSecretName, err)
	}
	epoch, _ = strconv.ParseInt(sec.Annotations[epochAnnot], 10, 64)
	if s, err = decodeView(sec.Data[viewKey]); err != nil {
		return s, 0, false, fmt.Errorf("secret %s/%s: %s: %w", v.Namespace, ViewSecretName, viewKey, err)
	}
	return s, epoch, true, nil
}

// Save stores s as written by the active of epoch; it refuses (ErrStaleView)
// when a newer active already wrote, and a concurrent write makes it fail
// with a conflict (the caller retries with what it then has).
func (v ViewStore) Save(ctx context.Context, s gateway.StoredView, epoch int64) error {
	b, err := encodeView(s)
	if err != nil {
		return fmt.Errorf("encode the gateway view: %w", err)
	}
	secrets := v.Client.CoreV1().Secrets(v.Namespace)
	cur, err := secrets.Get(ctx, ViewSecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: ViewSecretName, Namespace: v.Namespace,
			Labels:      map[string]string{"app.kubernetes.io/part-of": "tunnelmesh"},
			Annotations: map[string]string{epochAnnot: strconv.FormatInt(epoch, 10)}},
			Data: map[string][]byte{viewKey: b}}
		if _, err := secrets.Create(ctx, sec, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create secret %s/%s: %w", v.Namespace, ViewSecretName, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read secret %s/%s: %w", v.Namespace, ViewSecretName, err)
	}
	if e, _ := strconv.ParseInt(cur.Annotations[epochAnnot], 10, 64); e > epoch {
		return ErrStaleView
	}
	if cur.Annotations == nil {
		cur.Annotations = map[string]string{}
	}
	cur.Annotations[epochAnnot] = strconv.FormatInt(epoch, 10)
	cur.Data = map[string][]byte{viewKey: b}
	if _, err := secrets.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update secret %s/%s: %w", v.Namespace, ViewSecretName, err)
	}
	return nil
}
