# tunnelmesh — one target for each thing a person does.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
BIN := $(CURDIR)/bin
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w"

.PHONY: all build test test-unit test-unit-run unit-test-binaries fuzz-brief deps bench demo demo-down demo-netns vet images
all: build

## build: every command under cmd/ into bin/
build:
	@mkdir -p $(BIN)
	$(GOBUILD) -o $(BIN)/ ./cmd/...

## deps: install the Debian packages the tests and tools need (idempotent)
deps:
	@scripts/deps.sh

STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(CURDIR)/_output/tools/staticcheck

$(STATICCHECK):
	GOBIN=$(CURDIR)/_output/tools $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

## vet: gofmt, go vet and staticcheck must all be clean
vet: $(STATICCHECK)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

## test-unit: every Go test (root-only ones fail under CI=true when not root)
test-unit: deps vet unit-test-binaries test-unit-run

# test-unit-run: the Go tests alone (scripts/test.sh runs the prerequisites as phases of their own)
test-unit-run:
	@scripts/go-test.sh _output/test-phases/unit.log $(GO) test -count=1 -timeout 20m ./...

## fuzz-brief: every fuzz target for FUZZ_BRIEF inputs each (default 15000x), beyond the seeds go test runs
# A count, not a duration: a time-boxed run can end with the fuzzer's own
# "context deadline exceeded" when the clock runs out mid-input (seen in CI),
# a failure that says nothing about the code.
FUZZ_BRIEF ?= 15000x
fuzz-brief:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeValidate$$' -fuzztime $(FUZZ_BRIEF) ./pkg/broker/validate
	$(GO) test -run '^$$' -fuzz '^FuzzProbe$$' -fuzztime $(FUZZ_BRIEF) ./pkg/gateway

## test: everything CI runs, in timed phases (scripts/test.sh): vet, the unit tests' binaries, unit
## tests and fuzz-brief while the kind and project images build beside them, then the kind e2e
test:
	@scripts/test.sh

## bench: every benchmark; each prints a table
bench: bench-broker bench-dataplane bench-export bench-failover

include $(wildcard mk/*.mk)

## images: the kind node image and every container image, built here with no registry
images: node-image project-images

## demo: two kind clusters linked with meshctl, a Service exported from one answering in the other
## (builds what is missing first; the first run builds Kubernetes from source)
demo:
	@echo "demo: compiling the demo program (e2e/demo)"
	@$(GO) run ./e2e/demo

## demo-down: delete the demo's kind clusters (east, west)
demo-down:
	@$(GO) run ./e2e/demo down

## demo-netns: a broker and two clusters in network namespaces, tunnels and traffic between them (root)
demo-netns:
	@scripts/demo.sh
