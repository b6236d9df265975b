// Package e2e holds tunnelmesh's end-to-end tests: they create two kind
// clusters from the node image built by `make node-image` (or
// $KIND_NODE_IMAGE), load the project images with kind's Go API and test
// them. Every file carries the build tag e2e, so `go test ./...` of the
// repository does not run them; `make e2e` does.
//
// Environment: KIND_NODE_IMAGE or NODE_IMAGE_FILE (a file holding the image
// name), PROJECT_IMAGE_DIR (docker-save tarballs loaded into every node),
// E2E_KEEP=1 (keep clusters), E2E_REUSE=1 (run against kept
// clusters instead of creating them; add E2E_KEEP=1 to keep them again), E2E_LOG_DIR (default e2e/logs), CI=true (a
// missing prerequisite fails instead of skipping).
package e2e
