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
	// MaxAppProtocol bounds a port's appProtocol.
	MaxAppProtocol = 256
	// MaxEndpointsPerSlice is where an importer splits a cluster's
	// endpoints into EndpointSlices, as the EndpointSlice controller does
	// by default.
	MaxEndpointsPerSlice = 100
	// MaxSlicesPerExport caps the EndpointSlices one export makes in every
	// importing cluster (EndpointSlices counts them): 2000 dual-stack
	// endpoints in three port sets (a rollout that renumbers a named
	// port) make at most 44. The broker refuses an export beyond it (its
	// --max-slices-per-export may lower it, not raise it) and importers
	// build no more than it.
	MaxSlicesPerExport = 64
)
