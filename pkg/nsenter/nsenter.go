// Package nsenter runs code inside a network namespace. Netlink, nftables and
// sysctl calls act on the namespace of the calling OS thread, so fn runs on a
// thread of its own that is never handed back to the Go scheduler.
package nsenter

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Do runs fn inside the network namespace ns and returns its error. fn may
// block (a reconcile loop); it runs on a new goroutine locked to an OS
// thread that exits with it, so no other goroutine ever runs in ns by accident.
func Do(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		if err := unix.Setns(int(ns), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Maybe runs fn in ns when ns is set, else in the caller's namespace.
func Maybe(ns *netns.NsHandle, fn func() error) error {
	if ns == nil || !ns.IsOpen() {
		return fn()
	}
	return Do(*ns, fn)
}
