# kind.mk — a Docker engine that runs kind nodes, the kind node image built
# here with no registry, and the e2e harness.
#
#   make docker-engine   an engine answers and runs privileged containers
#   make node-image      tunnelmesh/kind-node:$(K8S_VERSION)-<hash of inputs>,
#                        reused while its inputs are unchanged; name in $(NODE_IMAGE_FILE)
#   make e2e             two kind clusters + the e2e tests in e2e/ (build tag e2e)
#
# KIND_NODE_IMAGE=<image> uses that node image instead of building one.
# E2E_KEEP=1 keeps the clusters, E2E_REUSE=1 runs against kept clusters,
# E2E_RUN=<regexp> selects tests.

NODE_IMAGE_FILE   := $(CURDIR)/_output/node-image.txt
PROJECT_IMAGE_DIR ?= $(CURDIR)/_output/project-images
E2E_TIMEOUT       ?= 45m
K8S_VERSION       ?= v1.36.0

.PHONY: docker-engine node-image e2e e2e-run

docker-engine:
	@scripts/docker-engine.sh

node-image: docker-engine k8s-binaries cni-plugins component-images
	@K8S_VERSION=$(K8S_VERSION) K8S_BIN=$(CURDIR)/_output/k8s/bin CNI_BIN=$(CURDIR)/_output/cni/bin \
		IMAGES_DIR=$(CURDIR)/_output/images OUT_FILE=$(NODE_IMAGE_FILE) images/node/build.sh

# e2e: without a usable engine the step fails under CI=true and is skipped
# (with the reason) elsewhere.
e2e:
	@if ! scripts/docker-engine.sh; then \
		if [ "$${CI:-}" = true ]; then echo "e2e: FAIL: no usable Docker engine (see above)"; exit 1; fi; \
		echo "e2e: SKIPPED: no usable Docker engine (see above); set CI=true to make this fatal"; exit 0; \
	fi
	@t0=$$(date +%s); \
	if [ -z "$${KIND_NODE_IMAGE:-}" ]; then $(MAKE) --no-print-directory node-image || exit 1; fi; \
	t1=$$(date +%s); $(MAKE) --no-print-directory project-images || exit 1; \
	t2=$$(date +%s); $(MAKE) --no-print-directory e2e-run; rc=$$?; t3=$$(date +%s); \
	echo "e2e: phases: node image $$((t1-t0)) s, project images $$((t2-t1)) s, test bed + tests $$((t3-t2)) s (the test bed's own time and each test's are above), total $$((t3-t0)) s"; \
	exit $$rc

e2e-run:
	$(GO) vet -tags e2e ./e2e/...
	@mkdir -p $(BIN) && $(GOBUILD) -o $(BIN)/meshctl ./cmd/meshctl
	cd e2e && NODE_IMAGE_FILE=$(NODE_IMAGE_FILE) PROJECT_IMAGE_DIR=$(PROJECT_IMAGE_DIR) MESHCTL=$(BIN)/meshctl \
		$(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -v $(if $(E2E_RUN),-run '$(E2E_RUN)') .
