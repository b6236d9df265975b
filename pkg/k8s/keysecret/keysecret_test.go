package keysecret

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tunnelmesh/tunnelmesh/internal/kubeapi"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
)

func setup(t *testing.T) kubernetes.Interface {
	env := kubeapi.Start(t)
	c := env.Client(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: defaults.Namespace}}
	if _, err := c.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConcurrentCreatorsEndWithOneKeyThatARestartKeeps(t *testing.T) {
	c := setup(t)
	var generated atomic.Int32
	gen := func() (wgtypes.Key, error) { generated.Add(1); return wgtypes.GeneratePrivateKey() }

	// A standby waits before anyone creates.
	waited := make(chan wgtypes.Key, 1)
	go func() {
		k, err := Store{Client: c}.Wait(t.Context())
		if err != nil {
			t.Error(err)
		}
		waited <- k
	}()

	const n = 8
	keys := make([]wgtypes.Key, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			k, err := Store{Client: c, Generate: gen}.Ensure(t.Context())
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	close(start)
	wg.Wait()
	for i, k := range keys {
		if k != keys[0] {
			t.Fatalf("creator %d got %s, creator 0 %s", i, k.PublicKey(), keys[0].PublicKey())
		}
	}
	if generated.Load() < 2 {
		t.Logf("only %d creator(s) generated a key: the race was not exercised this time", generated.Load())
	}
	select {
	case k := <-waited:
		if k != keys[0] {
			t.Fatalf("standby waited for %s; the cluster's key is %s", k.PublicKey(), keys[0].PublicKey())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("standby still waiting 5 s after the key was created")
	}

	// A restarted gateway reads the same key and generates nothing.
	before := generated.Load()
	k, err := Store{Client: c, Generate: gen}.Ensure(t.Context())
	if err != nil || k != keys[0] || generated.Load() != before {
		t.Fatalf("after restart: key %v err %v, generated %d more; want the same key and none generated", k.PublicKey(), err, generated.Load()-before)
	}
	sec, err := c.CoreV1().Secrets(defaults.Namespace).Get(t.Context(), SecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sec.Immutable == nil || !*sec.Immutable || string(sec.Data[KeyField]) != keys[0].String() {
		t.Fatalf("secret %+v; want immutable with the key", sec)
	}
}

func TestStandbyGetsNotFoundAndNeverCreates(t *testing.T) {
	c := setup(t)
	if _, err := (Store{Client: c}).Get(t.Context()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get with no Secret: %v; want ErrNotFound", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := (Store{Client: c}).Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with no Secret: %v; want the context's deadline", err)
	}
	if _, err := c.CoreV1().Secrets(defaults.Namespace).Get(t.Context(), SecretName, metav1.GetOptions{}); err == nil {
		t.Fatal("a reader created the Secret")
	}
}

func TestBadSecretIsReportedNotOverwritten(t *testing.T) {
	c := setup(t)
	bad := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: SecretName, Namespace: defaults.Namespace},
		Data: map[string][]byte{KeyField: []byte("not-a-key")}}
	if _, err := c.CoreV1().Secrets(defaults.Namespace).Create(t.Context(), bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := Store{Client: c}.Ensure(t.Context())
	if err == nil || !strings.Contains(err.Error(), "is not a WireGuard key") || !strings.Contains(err.Error(), "delete the Secret") {
		t.Fatalf("Ensure over a bad Secret: %v; want a clear error", err)
	}
	got, _ := c.CoreV1().Secrets(defaults.Namespace).Get(t.Context(), SecretName, metav1.GetOptions{})
	if string(got.Data[KeyField]) != "not-a-key" {
		t.Fatalf("the bad Secret was changed to %q", got.Data[KeyField])
	}
}

func TestGossipKeyIsDerivedAndDistinct(t *testing.T) {
	a, _ := wgtypes.GeneratePrivateKey()
	b, _ := wgtypes.GeneratePrivateKey()
	a2 := a
	if len(GossipKey(a)) != 32 || string(GossipKey(a)) != string(GossipKey(a2)) || string(GossipKey(a)) == string(GossipKey(b)) {
		t.Fatal("GossipKey must be 32 bytes, stable per key and differ between keys")
	}
	if string(GossipKey(a)) == string(a[:]) {
		t.Fatal("GossipKey must not be the WireGuard key itself")
	}
}
