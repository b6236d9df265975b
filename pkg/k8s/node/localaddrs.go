package node

import (
	"context"
	"net/netip"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// APIServerAddrs are the addresses of the local API server: the endpoints
// of Service default/kubernetes (its EndpointSlice, read by name). None
// when it does not exist; an error when it cannot be read.
func APIServerAddrs(ctx context.Context, client kubernetes.Interface) ([]netip.Addr, error) {
	s, err := client.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, e := range s.Endpoints {
		for _, a := range e.Addresses {
			if ip, err := netip.ParseAddr(a); err == nil {
				out = append(out, ip.Unmap())
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

// followAPIServerAddrs calls onChange with APIServerAddrs now and whenever
// they change (read every interval), until ctx ends.
func (r *runner) followAPIServerAddrs(ctx context.Context, every time.Duration, onChange func([]netip.Addr)) {
	var last []netip.Addr
	sent := false
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		addrs, err := APIServerAddrs(rctx, r.cfg.Client)
		cancel()
		switch {
		case err != nil:
			r.log.Warn("read the API server's endpoints (remote CIDRs covering them are refused once known)", "err", err)
		case !sent || !slices.Equal(addrs, last):
			last, sent = addrs, true
			onChange(addrs)
		}
		sleep(ctx, every)
	}
}
