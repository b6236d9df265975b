// Package keysecret keeps the cluster's WireGuard private key in a Secret, so
// that every gateway candidate of the cluster has the same identity and a
// restart keeps it. The key is created exactly once, by create-or-conflict:
// of several creators the apiserver lets one win and the others read the
// winner's key. The Secret is immutable and is never regenerated.
//
// Who may call Ensure: meshctl join (before installing the gateway) and a
// candidate at start-up, before any election, because the candidates'
// gossip key is derived from it (GossipKey). Nobody ever ends up with a key
// of its own: every Ensure returns the one stored key. Code that must not
// create (a standby in the middle of its life, tools) uses Get or Wait.
package keysecret

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// Names fixed by the design.
const (
	SecretName = "tunnelmesh-wireguard"
	KeyField   = "private.key" // base64 text, as `wg genkey` prints it
)

// Store reads and creates the key Secret.
type Store struct {
	Client    kubernetes.Interface
	Namespace string // defaults.Namespace when empty
	// Generate makes a new key; wgtypes.GeneratePrivateKey when nil.
	Generate func() (wgtypes.Key, error)
}

func (s Store) ns() string {
	if s.Namespace == "" {
		return defaults.Namespace
	}
	return s.Namespace
}

// Ensure returns the cluster's key, creating the Secret if there is none yet.
// Of concurrent callers exactly one creates; all return the same key.
func (s Store) Ensure(ctx context.Context) (wgtypes.Key, error) {
	k, err := s.Get(ctx)
	if !errors.Is(err, ErrNotFound) {
		return k, err
	}
	gen := s.Generate
	if gen == nil {
		gen = wgtypes.GeneratePrivateKey
	}
	fresh, err := gen()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("generate the cluster's WireGuard key: %w", err)
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: SecretName, Namespace: s.ns(),
			Labels: map[string]string{"app.kubernetes.io/part-of": "tunnelmesh", "app.kubernetes.io/component": "gateway"}},
		Type:      corev1.SecretTypeOpaque,
		Immutable: ptr(true),
		Data:      map[string][]byte{KeyField: []byte(fresh.String())},
	}
	_, err = s.Client.CoreV1().Secrets(s.ns()).Create(ctx, sec, metav1.CreateOptions{})
	switch {
	case err == nil:
		return fresh, nil
	case apierrors.IsAlreadyExists(err):
		return s.Get(ctx) // another candidate won; its key is the cluster's
	default:
		return wgtypes.Key{}, fmt.Errorf("create Secret %s/%s for the cluster's WireGuard key: %w", s.ns(), SecretName, err)
	}
}

// ErrNotFound: the Secret does not exist yet.
var ErrNotFound = errors.New("the cluster's WireGuard key Secret does not exist yet")

// Get reads the key; ErrNotFound when there is no Secret. A Secret without a
// valid key is an error that says how to fix it: it is never overwritten.
func (s Store) Get(ctx context.Context) (wgtypes.Key, error) {
	sec, err := s.Client.CoreV1().Secrets(s.ns()).Get(ctx, SecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return wgtypes.Key{}, fmt.Errorf("secret %s/%s: %w", s.ns(), SecretName, ErrNotFound)
	}
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("read Secret %s/%s: %w", s.ns(), SecretName, err)
	}
	return parse(sec)
}

func parse(sec *corev1.Secret) (wgtypes.Key, error) {
	raw, ok := sec.Data[KeyField]
	if !ok {
		return wgtypes.Key{}, fmt.Errorf("secret %s/%s has no %q; delete it (every gateway of the cluster then gets a new identity) or add the key as `wg genkey` prints it", sec.Namespace, sec.Name, KeyField)
	}
	k, err := wgtypes.ParseKey(strings.TrimSpace(string(raw)))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("secret %s/%s field %q is not a WireGuard key (%v); delete the Secret to make a new one, or put a `wg genkey` output there", sec.Namespace, sec.Name, KeyField, err)
	}
	return k, nil
}

// Wait returns the key once the Secret exists (a standby waits for the
// active to create it), watching rather than polling.
func (s Store) Wait(ctx context.Context) (wgtypes.Key, error) {
	sel := fields.OneTermEqualSelector("metadata.name", SecretName).String()
	secrets := s.Client.CoreV1().Secrets(s.ns())
	for {
		list, err := secrets.List(ctx, metav1.ListOptions{FieldSelector: sel})
		if apierrors.IsForbidden(err) {
			return wgtypes.Key{}, fmt.Errorf("not allowed to list Secret %s/%s (check the gateway's RBAC): %w", s.ns(), SecretName, err)
		}
		if err != nil {
			if ctx.Err() != nil {
				return wgtypes.Key{}, ctx.Err()
			}
			select {
			case <-ctx.Done():
				return wgtypes.Key{}, ctx.Err()
			case <-time.After(500 * time.Millisecond):
				continue
			}
		}
		if len(list.Items) > 0 {
			return parse(&list.Items[0])
		}
		w, err := secrets.Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.ResourceVersion})
		if apierrors.IsForbidden(err) {
			return wgtypes.Key{}, fmt.Errorf("not allowed to watch Secret %s/%s (check the gateway's RBAC): %w", s.ns(), SecretName, err)
		}
		if err != nil {
			select {
			case <-ctx.Done():
				return wgtypes.Key{}, ctx.Err()
			case <-time.After(500 * time.Millisecond):
				continue
			}
		}
		for ev := range w.ResultChan() {
			if sec, ok := ev.Object.(*corev1.Secret); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
				w.Stop()
				return parse(sec)
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			return wgtypes.Key{}, ctx.Err()
		}
	}
}

// GossipKey derives the 32-byte memberlist key of the cluster's gateway
// candidates from the WireGuard key, so gossip is authenticated with no
// second secret to distribute.
func GossipKey(k wgtypes.Key) []byte {
	h := sha256.New()
	h.Write([]byte("tunnelmesh gateway candidates memberlist v1\x00"))
	h.Write(k[:])
	return h.Sum(nil)
}

func ptr[T any](v T) *T { return &v }
