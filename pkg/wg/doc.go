// Package wg owns the gateway's WireGuard interface: it creates the device
// (kernel module when present, otherwise embedded wireguard-go on a TUN with
// its UAPI socket), keeps the private key across restarts, and configures
// peers through wgctrl — one code path for both kinds of device.
package wg
