package api

// Record keys: the Key of watch events and of the broker's records.

// GatewayKey is the key of a gateway record.
func GatewayKey(cluster, hostname string) string { return cluster + "/" + hostname }

// ExportKey is the key of an export record.
func ExportKey(cluster, namespace, name string) string {
	return cluster + "/" + namespace + "/" + name
}
