package wg

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// Mode selects the WireGuard implementation.
type Mode string

const (
	ModeAuto      Mode = "auto"
	ModeKernel    Mode = "kernel"
	ModeUserspace Mode = "userspace"
)

// Device is a WireGuard interface this process created.
type Device struct {
	Name string
	Mode Mode // kernel or userspace, whichever was created

	dev  *device.Device
	uapi net.Listener
	log  *slog.Logger
}

// Options describe the interface to create.
type Options struct {
	Name string
	MTU  int
	Mode Mode
	Log  *slog.Logger
}

// Open creates the interface and brings it up. In auto mode it tries the
// kernel module and falls back to embedded wireguard-go.
func Open(o Options) (*Device, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Mode == "" {
		o.Mode = ModeAuto
	}
	if o.MTU <= 0 {
		o.MTU = device.DefaultMTU
	}
	if l, err := netlink.LinkByName(o.Name); err == nil {
		// A kernel device survives a crash (a TUN does not): start clean,
		// but never remove an interface of another kind that took the name.
		if t := l.Type(); t != "wireguard" && t != "tuntap" {
			return nil, fmt.Errorf("interface %s exists and is a %s device, not ours; remove it or pick another --interface", o.Name, t)
		}
		if err := netlink.LinkDel(l); err != nil {
			return nil, fmt.Errorf("remove stale interface %s: %w", o.Name, err)
		}
	}
	var d *Device
	var err error
	switch o.Mode {
	case ModeKernel:
		d, err = openKernel(o)
	case ModeUserspace:
		d, err = openUserspace(o)
	case ModeAuto:
		d, err = openKernel(o)
		if err != nil {
			o.Log.Info("kernel WireGuard unavailable, using embedded wireguard-go", "reason", err)
			d, err = openUserspace(o)
		}
	default:
		return nil, fmt.Errorf("unknown WireGuard mode %q (want auto, kernel or userspace)", o.Mode)
	}
	if err != nil {
		return nil, err
	}
	l, err := netlink.LinkByName(o.Name)
	if err == nil {
		err = netlink.LinkSetMTU(l, o.MTU)
	}
	if err == nil {
		err = netlink.LinkSetUp(l)
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("bring up %s: %w", o.Name, err)
	}
	return d, nil
}

func openKernel(o Options) (*Device, error) {
	link := &netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: o.Name, MTU: o.MTU}}
	if err := netlink.LinkAdd(link); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return nil, fmt.Errorf("kernel has no WireGuard module: %w", err)
		}
		return nil, fmt.Errorf("add kernel WireGuard link %s: %w", o.Name, err)
	}
	return &Device{Name: o.Name, Mode: ModeKernel, log: o.Log}, nil
}

func openUserspace(o Options) (*Device, error) {
	// CreateTUN turns on IFF_VNET_HDR and TSO/USO offloads, so wireguard-go
	// moves GSO super-packets and coalesces (GRO) on write.
	tdev, err := tun.CreateTUN(o.Name, o.MTU)
	if err != nil {
		return nil, fmt.Errorf("create TUN %s: %w", o.Name, err)
	}
	lg := &device.Logger{
		Verbosef: device.DiscardLogf,
		Errorf: func(format string, args ...any) {
			o.Log.Error(fmt.Sprintf(format, args...), "component", "wireguard-go")
		},
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), lg)
	f, err := ipc.UAPIOpen(o.Name)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("open UAPI socket for %s: %w", o.Name, err)
	}
	uapi, err := ipc.UAPIListen(o.Name, f)
	f.Close()
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("listen on UAPI socket for %s: %w", o.Name, err)
	}
	go func() {
		for {
			c, err := uapi.Accept()
			if err != nil {
				return
			}
			go dev.IpcHandle(c)
		}
	}()
	return &Device{Name: o.Name, Mode: ModeUserspace, dev: dev, uapi: uapi, log: o.Log}, nil
}

// Wait is closed when an embedded device stops on its own; nil for kernel devices.
func (d *Device) Wait() <-chan struct{} {
	if d.dev == nil {
		return nil
	}
	return d.dev.Wait()
}

// Close removes the interface (and the UAPI socket of an embedded device).
func (d *Device) Close() error {
	if d.dev != nil {
		d.uapi.Close()
		d.dev.Close() // closing the TUN removes the link
		return nil
	}
	l, err := netlink.LinkByName(d.Name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find %s: %w", d.Name, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", d.Name, err)
	}
	return nil
}

// UnderlayMTU returns the MTU of the interface that carries traffic to dst.
func UnderlayMTU(dst net.IP) (int, error) {
	rs, err := netlink.RouteGet(dst)
	if err != nil || len(rs) == 0 {
		return 0, fmt.Errorf("route to %s: %v", dst, err)
	}
	if rs[0].MTU > 0 {
		return rs[0].MTU, nil
	}
	l, err := netlink.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		return 0, fmt.Errorf("link of route to %s: %w", dst, err)
	}
	return l.Attrs().MTU, nil
}

// KernelAvailable reports, without changing anything, why kernel WireGuard
// cannot be used here (nil when the module is loaded or built in).
func KernelAvailable() error {
	if _, err := os.Stat("/sys/module/wireguard"); err != nil {
		return fmt.Errorf("the wireguard kernel module is not loaded (no /sys/module/wireguard; try modprobe wireguard): %w", err)
	}
	return nil
}
