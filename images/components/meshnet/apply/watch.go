package apply

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// WatchRouteDeletes calls onDelete whenever a meshnet route (proto 79) disappears
// from the namespace ns (nil: the caller's), so the daemon puts it back at once
// instead of at the next resync. It calls subscribed once when it watches:
// a deletion before that raised no event here, so the caller checks its routes
// then. It returns when ctx ends.
func WatchRouteDeletes(ctx context.Context, ns *netns.NsHandle, subscribed, onDelete func()) error {
	ch := make(chan netlink.RouteUpdate, 64)
	errs := make(chan error, 1)
	if err := netlink.RouteSubscribeWithOptions(ch, ctx.Done(), netlink.RouteSubscribeOptions{
		Namespace: ns,
		ErrorCallback: func(err error) {
			select {
			case errs <- err:
			default:
			}
		},
	}); err != nil {
		return fmt.Errorf("subscribe to route events: %w", err)
	}
	subscribed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return fmt.Errorf("route events: %w", err)
		case u, ok := <-ch:
			if !ok {
				return nil
			}
			if u.Type == unix.RTM_DELROUTE && u.Protocol == RouteProtocol {
				onDelete()
			}
		}
	}
}
