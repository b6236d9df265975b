# Broker targets: the broker benchmark, its tests and the fuzzing of its request decoders.
.PHONY: bench-broker test-broker fuzz-broker

## bench-broker: 1000 clusters × 10 exports, 1000 watchers, then 1000 gateways heartbeating every 10 s; prints tables
bench-broker:
	@mkdir -p $(BIN)
	$(GOBUILD) -o $(BIN)/broker ./cmd/broker
	$(GOBUILD) -o $(BIN)/broker-bench ./cmd/broker-bench
	$(BIN)/broker-bench --broker-bin $(BIN)/broker $(BENCH_BROKER_FLAGS)

## test-broker: the broker's and its client's tests (fuzz seeds included)
test-broker:
	$(GO) test -count=1 ./pkg/broker/... ./pkg/brokerclient/... ./cmd/broker/...

## fuzz-broker: fuzz request decoding and validation for FUZZTIME (default 60s)
fuzz-broker:
	$(GO) test -run '^$$' -fuzz FuzzDecodeValidate -fuzztime $(or $(FUZZTIME),60s) ./pkg/broker/validate/
