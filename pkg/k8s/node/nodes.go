package node

import (
	"context"
	"net/netip"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// followNodeAddrs calls onChange with NodeAddrs of the cluster's nodes
// once they are listed and whenever they change, until ctx ends.
func followNodeAddrs(ctx context.Context, client kubernetes.Interface, onChange func([]netip.Addr)) error {
	f := informers.NewSharedInformerFactory(client, 0)
	inf := f.Core().V1().Nodes().Informer()
	var mu sync.Mutex
	var last []netip.Addr
	sent := false
	push := func() {
		if !inf.HasSynced() {
			return
		}
		var all []*corev1.Node
		for _, o := range inf.GetStore().List() {
			if n, ok := o.(*corev1.Node); ok {
				all = append(all, n)
			}
		}
		addrs := NodeAddrs(all)
		mu.Lock()
		defer mu.Unlock()
		if sent && slices.Equal(addrs, last) {
			return
		}
		last, sent = addrs, true
		onChange(addrs)
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { push() }, UpdateFunc: func(any, any) { push() }, DeleteFunc: func(any) { push() },
	}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	if cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		push()
	}
	<-ctx.Done()
	return nil
}
