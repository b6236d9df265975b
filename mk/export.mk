# Multi-Cluster Services: the export controller's tests and benchmark.
.PHONY: test-export bench-export

## test-export: MCS controller and Corefile editor tests (real apiservers and broker)
test-export:
	KUBE_BIN_DIR=$(or $(KUBE_BIN_DIR),$(CURDIR)/_output/k8s/bin) $(GO) test -count=1 ./pkg/export/... ./pkg/dns/...

## bench-export: 1000 ServiceExports in one cluster, time until imported in the other (p50/p99/max), then 1000 deletions; prints a table
bench-export:
	KUBE_BIN_DIR=$(or $(KUBE_BIN_DIR),$(CURDIR)/_output/k8s/bin) $(GO) test -count=1 -run '^$$' -bench '^BenchmarkExport$$' -benchtime 1x -timeout 30m ./pkg/export/
