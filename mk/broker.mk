# Broker targets: the broker benchmark, its tests and the fuzzing of its request decoders.
.PHONY: bench-broker test-broker test-broker-faults fuzz-broker

# The etcd the project builds (mk/components.mk), for the etcd store's tests and bench.
BROKER_ETCD_DIR := $(or $(KUBE_BIN_DIR),$(CURDIR)/_output/k8s/bin)
STORE ?= bolt

## bench-broker: 1000 clusters × 10 exports, 1000 watchers, then 1000 gateways heartbeating every 10 s; prints tables.
## STORE=etcd: the same on a 3-member etcd cluster with 2 broker replicas
bench-broker: $(if $(filter etcd,$(STORE)),$(BROKER_ETCD_DIR)/etcd)
	@mkdir -p $(BIN)
	$(GOBUILD) -o $(BIN)/broker ./cmd/broker
	$(GOBUILD) -o $(BIN)/broker-bench ./cmd/broker-bench
	$(BIN)/broker-bench --broker-bin $(BIN)/broker --store $(STORE) --etcd-bin $(BROKER_ETCD_DIR)/etcd $(BENCH_BROKER_FLAGS)

## test-broker: the broker's and its client's tests (fuzz seeds included), on bbolt and again on etcd
test-broker: $(BROKER_ETCD_DIR)/etcd
	KUBE_BIN_DIR=$(BROKER_ETCD_DIR) $(GO) test -count=1 ./pkg/broker/... ./pkg/brokerclient/... ./cmd/broker/...
	KUBE_BIN_DIR=$(BROKER_ETCD_DIR) TUNNELMESH_BROKER_STORE=etcd $(GO) test -count=1 ./pkg/broker/... ./pkg/brokerclient/... ./cmd/broker/...

## test-broker-faults: the broker as shipped (2 replica processes, 3 etcd members, etcd's default limits)
## under writers, watchers and heartbeats while the etcd leader is SIGKILLed, the quorum lost for 30 s, a
## replica SIGKILLed mid-batch and the leader paused; prints a table per fault (~70 s). A phase of `make test`.
test-broker-faults: $(BROKER_ETCD_DIR)/etcd
	@set -o pipefail; KUBE_BIN_DIR=$(BROKER_ETCD_DIR) TUNNELMESH_FAULT_RUN=1 $(GO) test -count=1 -timeout 10m \
		-run '^TestFaultInjection$$' -v ./pkg/broker/ | grep -v -e '^=== RUN' -e '^\s*$$'

## fuzz-broker: fuzz request decoding and validation for FUZZTIME (default 60s)
fuzz-broker:
	$(GO) test -run '^$$' -fuzz FuzzDecodeValidate -fuzztime $(or $(FUZZTIME),60s) ./pkg/broker/validate/
