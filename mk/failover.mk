# Failover of the in-cluster gateway: the end-to-end test and the benchmark
# (network namespaces, a real kube-apiserver and broker; needs root and the
# binaries of `make k8s-binaries etcd-binary`).
.PHONY: bench-failover test-failover

FAILOVER_KILLS ?= 10

## bench-failover: median/p90/max time to a new active, to the cross-cluster flow moving (pods on non-gateway nodes of both clusters), packets lost — kill -9, node killed, node frozen, election cut, graceful, broker up and down; prints a table
bench-failover:
	@echo "load before: $$(cut -d' ' -f1-3 /proc/loadavg)"
	@mkdir -p bin
	FAILOVER_KILLS=$(FAILOVER_KILLS) BENCH_OUT=$(CURDIR)/bin/bench-failover.txt $(GO) test -count=1 -run '^$$' -bench '^BenchmarkFailover$$' -benchtime 1x -timeout 90m ./test/failover

## test-failover: the in-cluster gateway's failover test alone
test-failover:
	$(GO) test -count=1 -v -timeout 15m ./test/failover
