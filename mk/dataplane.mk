# Data plane: root test bed and benchmark (network namespaces; needs root).
.PHONY: bench-dataplane test-dataplane

## bench-dataplane: tunnelmesh (untranslated and both sides translated) vs plain veth vs standalone wireguard-go (iperf3 1/4 streams, ping); prints a table
bench-dataplane: deps
	@echo "load before: $$(cut -d' ' -f1-3 /proc/loadavg)"
	BENCH_OUT=$(CURDIR)/bin/bench-dataplane.txt $(GO) test -count=1 -run '^$$' -bench '^BenchmarkDataplane$$' -benchtime 1x -timeout 20m ./pkg/testbed

## test-dataplane: the network-namespace test bed alone
test-dataplane:
	$(GO) test -count=1 -v -timeout 10m ./pkg/testbed ./pkg/wg ./pkg/routes ./pkg/gateway
