package api

// Limits on what one request may carry, so that one member cannot bloat
// every watcher's state. The broker refuses more (package validate); the
// clients that build records (the export controller) stay within them.
const (
	MaxCIDRs     = 16
	MaxLabels    = 64
	MaxHealth    = 1 << 20 // one per remote cluster: generous; the heartbeat's body size bounds it
	MaxPorts     = 128
	MaxIPs       = 2
	MaxEndpoints = 2000
	MaxAddresses = 16
	MaxText      = 1024
)
