# kind.mk — a Docker engine that runs kind nodes, the kind node image built
# here with no registry, and the e2e harness.
#
#   make docker-engine   an engine answers and runs privileged containers
#   make node-image      tunnelmesh/kind-node:$(K8S_VERSION)-<hash of inputs>
#   make e2e             two kind clusters + the e2e tests (e2e/)

.PHONY: docker-engine
docker-engine:
	@scripts/docker-engine.sh
