# components.mk — everything that goes into the kind node image and the project images,
# built here from the Go module proxy (no container registry is ever used).
#
#   make k8s-binaries      _output/k8s/bin/{kubelet,kubeadm,kubectl,kube-apiserver,...} (v1.36.0)
#   make etcd-binary       _output/k8s/bin/etcd (for controller tests with a real apiserver)
#   make cni-plugins       _output/cni/bin/{bridge,host-local,loopback,portmap,ptp}
#   make component-images  registry.k8s.io/* images kubeadm v1.36.0 expects + our CNI daemon,
#                          saved to _output/images/*.tar, plus _output/images/default-cni.yaml
#   make project-images    tunnelmesh broker/gateway + echoserver/netclient test images,
#                          saved to _output/project-images/*.tar (loaded by the e2e harness)
#   make components-test   unit + netns tests of the CNI daemon and the test images
#   make component-images-test  the built images run together against a real API server

K8S_VERSION      := v1.36.0
K8S_MAJOR        := 1
K8S_MINOR        := 36
K8S_MOD          := tools/k8s
K8S_OUT          := $(CURDIR)/_output/k8s/bin
K8S_BUILD_DATE   := 2026-01-01T00:00:00Z
K8S_COMMANDS     := kube-apiserver kubelet kube-controller-manager kubeadm kubectl kube-proxy kube-scheduler
K8S_BINARIES     := $(addprefix $(K8S_OUT)/,$(K8S_COMMANDS))
K8S_VERSION_PKGS := k8s.io/component-base/version k8s.io/client-go/pkg/version
K8S_LDFLAGS      := -s -w $(foreach p,$(K8S_VERSION_PKGS),\
	-X '$(p).gitVersion=$(K8S_VERSION)' -X '$(p).gitMajor=$(K8S_MAJOR)' -X '$(p).gitMinor=$(K8S_MINOR)' \
	-X '$(p).gitTreeState=clean' -X '$(p).buildDate=$(K8S_BUILD_DATE)')
K8S_GOBUILD      := cd $(K8S_MOD) && CGO_ENABLED=0 $(GO) build -trimpath -ldflags="$(K8S_LDFLAGS)"

.PHONY: k8s-binaries
k8s-binaries: $(K8S_BINARIES)

# Each binary depends only on the pinned module files, so an up-to-date binary is never rebuilt.
$(K8S_OUT)/%: $(K8S_MOD)/go.mod $(K8S_MOD)/go.sum
	@mkdir -p $(K8S_OUT)
	@echo "k8s: building $* $(K8S_VERSION)"
	@start=$$(date +%s); $(K8S_GOBUILD) -o $@.tmp k8s.io/kubernetes/cmd/$* && mv $@.tmp $@ && \
		echo "k8s: $* built in $$(( $$(date +%s) - start )) s"

# --- etcd, CoreDNS and the CNI plugins: separate modules pinned to what kubeadm v1.36.0 expects ---

ETCD_VERSION    := 3.6.8
ETCD_IMAGE_TAG  := 3.6.8-0
COREDNS_VERSION := v1.14.2
PAUSE_VERSION   := 3.10.2
CNI_OUT         := $(CURDIR)/_output/cni/bin
CNI_PLUGINS     := bridge host-local loopback portmap ptp
CNI_PKG_bridge     := plugins/main/bridge
CNI_PKG_host-local := plugins/ipam/host-local
CNI_PKG_loopback   := plugins/main/loopback
CNI_PKG_portmap    := plugins/meta/portmap
CNI_PKG_ptp        := plugins/main/ptp
STATIC_GOBUILD  := CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w"

.PHONY: etcd-binary cni-plugins
## etcd-binary: _output/k8s/bin/{etcd,etcdctl} (for controller tests against a real kube-apiserver)
etcd-binary: $(K8S_OUT)/etcd $(K8S_OUT)/etcdctl

$(K8S_OUT)/etcd: tools/etcd/go.mod tools/etcd/go.sum
	@mkdir -p $(K8S_OUT)
	cd tools/etcd && $(STATIC_GOBUILD) -o $@.tmp go.etcd.io/etcd/server/v3 && mv $@.tmp $@

$(K8S_OUT)/etcdctl: tools/etcd/go.mod tools/etcd/go.sum
	@mkdir -p $(K8S_OUT)
	cd tools/etcd && $(STATIC_GOBUILD) -o $@.tmp go.etcd.io/etcd/etcdctl/v3 && mv $@.tmp $@

COREDNS_BIN := $(CURDIR)/_output/coredns/coredns
$(COREDNS_BIN): tools/coredns/go.mod tools/coredns/go.sum
	@mkdir -p $(dir $@)
	cd tools/coredns && CGO_ENABLED=0 $(GO) build -trimpath \
		-ldflags="-s -w -X github.com/coredns/coredns/coremain.GitCommit=$(COREDNS_VERSION)" \
		-o $@.tmp github.com/coredns/coredns && mv $@.tmp $@

## cni-plugins: _output/cni/bin/{bridge,host-local,loopback,portmap,ptp} for the node's /opt/cni/bin
cni-plugins: $(addprefix $(CNI_OUT)/,$(CNI_PLUGINS))

$(CNI_OUT)/%: tools/cni/go.mod tools/cni/go.sum
	@mkdir -p $(CNI_OUT)
	cd tools/cni && $(STATIC_GOBUILD) -o $@.tmp github.com/containernetworking/plugins/$(CNI_PKG_$*) && mv $@.tmp $@

# --- our own Go programs (root module) ---

COMP_OUT   := $(CURDIR)/_output/components/bin
$(COMP_OUT)/pause:      PKG := ./images/components/pause
$(COMP_OUT)/meshnet:    PKG := ./images/components/meshnet
$(COMP_OUT)/echoserver: PKG := ./test/images/echoserver
$(COMP_OUT)/netclient:  PKG := ./test/images/netclient
$(COMP_OUT)/broker:     PKG := ./cmd/broker
$(COMP_OUT)/gateway:    PKG := ./cmd/gateway
# Go decides what is stale (its build cache makes an unchanged build take seconds); the
# file is replaced only when its bytes change, so images and the node image that
# depend on it are rebuilt only then — not whenever go.mod or another package changes.
$(COMP_OUT)/%: components-force
	@mkdir -p $(COMP_OUT)
	@$(STATIC_GOBUILD) -o $@.tmp $(PKG) && \
		if cmp -s $@.tmp $@; then rm $@.tmp; else mv $@.tmp $@; echo "built $@"; fi

.PHONY: components-force
components-force:

# --- images: every one built here, FROM scratch (kube-proxy: minimal Debian) ---

IMAGES_OUT         := $(CURDIR)/_output/images
PROJECT_IMAGES_OUT := $(CURDIR)/_output/project-images
IMAGE_CTX          := $(CURDIR)/_output/image-ctx
K8S_REGISTRY       := registry.k8s.io
MESHNET_IMAGE      := tunnelmesh/meshnet:v0.1.0
PROJECT_TAG        ?= dev
DEBIAN_IPTABLES    := tunnelmesh/debian-iptables:bookworm
DEBIAN_STAMP       := $(CURDIR)/_output/debian-iptables.stamp

# image name:tag, its tarball, the directory holding its Dockerfile, the files it copies
IMG_kube-apiserver          := $(K8S_REGISTRY)/kube-apiserver:$(K8S_VERSION)
IMG_kube-controller-manager := $(K8S_REGISTRY)/kube-controller-manager:$(K8S_VERSION)
IMG_kube-scheduler          := $(K8S_REGISTRY)/kube-scheduler:$(K8S_VERSION)
IMG_kube-proxy              := $(K8S_REGISTRY)/kube-proxy:$(K8S_VERSION)
IMG_etcd                    := $(K8S_REGISTRY)/etcd:$(ETCD_IMAGE_TAG)
IMG_coredns                 := $(K8S_REGISTRY)/coredns/coredns:$(COREDNS_VERSION)
IMG_pause                   := $(K8S_REGISTRY)/pause:$(PAUSE_VERSION)
IMG_meshnet                 := $(MESHNET_IMAGE)
IMG_broker                  := tunnelmesh/broker:$(PROJECT_TAG)
IMG_gateway                 := tunnelmesh/gateway:$(PROJECT_TAG)
IMG_echoserver              := tunnelmesh/echoserver:$(PROJECT_TAG)
IMG_netclient               := tunnelmesh/netclient:$(PROJECT_TAG)

FILES_kube-apiserver          := $(K8S_OUT)/kube-apiserver
FILES_kube-controller-manager := $(K8S_OUT)/kube-controller-manager
FILES_kube-scheduler          := $(K8S_OUT)/kube-scheduler
FILES_kube-proxy              := $(K8S_OUT)/kube-proxy
FILES_etcd                    := $(K8S_OUT)/etcd $(K8S_OUT)/etcdctl
FILES_coredns                 := $(COREDNS_BIN)
FILES_pause                   := $(COMP_OUT)/pause
FILES_meshnet                 := $(COMP_OUT)/meshnet
FILES_broker                  := $(COMP_OUT)/broker
FILES_gateway                 := $(COMP_OUT)/gateway
FILES_echoserver              := $(COMP_OUT)/echoserver
FILES_netclient               := $(COMP_OUT)/netclient

COMPONENT_IMAGES := kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd coredns pause meshnet
PROJECT_IMAGES   := broker gateway echoserver netclient

.PHONY: component-images project-images components-test print-component-images

## component-images: kubeadm v1.36.0's images + meshnet as _output/images/*.tar, and default-cni.yaml
component-images: $(addprefix $(IMAGES_OUT)/,$(addsuffix .tar,$(COMPONENT_IMAGES))) $(IMAGES_OUT)/default-cni.yaml

## project-images: broker, gateway, echoserver, netclient as _output/project-images/*.tar
project-images: $(addprefix $(PROJECT_IMAGES_OUT)/,$(addsuffix .tar,$(PROJECT_IMAGES)))

print-component-images:
	@$(foreach i,$(COMPONENT_IMAGES) $(PROJECT_IMAGES),echo "$(i) $(IMG_$(i))";)

# build-image NAME DOCKERFILE_DIR OUT_TAR: stage the Dockerfile and binaries, build, save.
define build-image
	@rm -rf $(IMAGE_CTX)/$(1) && mkdir -p $(IMAGE_CTX)/$(1) $(dir $(3))
	@cp $(2)/Dockerfile $(FILES_$(1)) $(IMAGE_CTX)/$(1)/
	@scripts/docker-engine.sh >/dev/null
	@docker image inspect -f '{{.Id}}' $(IMG_$(1)) >$(IMAGE_CTX)/$(1).prev-id 2>/dev/null || rm -f $(IMAGE_CTX)/$(1).prev-id
	$(if $(filter kube-proxy,$(1)),@docker image inspect $(DEBIAN_IPTABLES) >/dev/null 2>&1 || \
		images/components/debian-iptables/build.sh $(DEBIAN_IPTABLES) $(DEBIAN_STAMP))
	docker build -q $(if $(filter kube-proxy,$(1)),--build-arg BASE=$(DEBIAN_IPTABLES)) -t $(IMG_$(1)) $(IMAGE_CTX)/$(1) 2>&1 >/dev/null | { grep -v -e DEPRECATED -e 'legacy builder' -e buildx -e '^ *$$' >&2 || true; }; test $${PIPESTATUS[0]} -eq 0
	docker save -o $(3).tmp $(IMG_$(1)) && mv $(3).tmp $(3)
	@rm -rf $(IMAGE_CTX)/$(1)
	@# The image this build replaced, untagged now: every rebuild left one
	@# behind (a day of work left 3.7 GB of them, and a CI run hit a full disk).
	@prev=$$(cat $(IMAGE_CTX)/$(1).prev-id 2>/dev/null); rm -f $(IMAGE_CTX)/$(1).prev-id; \
		if [ -n "$$prev" ] && [ "$$prev" != "$$(docker image inspect -f '{{.Id}}' $(IMG_$(1)))" ]; then \
			docker rmi "$$prev" >/dev/null 2>&1 || true; fi
	@echo "image: $(IMG_$(1)) -> $(3) ($$(du -m $(3) | cut -f1) MB)"
endef

.SECONDEXPANSION:
$(IMAGES_OUT)/%.tar: images/components/%/Dockerfile $$(FILES_%)
	$(call build-image,$*,images/components/$*,$@)

$(PROJECT_IMAGES_OUT)/%.tar: images/project/%/Dockerfile $$(FILES_%)
	$(call build-image,$*,images/project/$*,$@)

$(IMAGES_OUT)/kube-proxy.tar: $(DEBIAN_STAMP)

$(DEBIAN_STAMP): images/components/debian-iptables/build.sh
	@mkdir -p $(dir $@)
	@scripts/docker-engine.sh >/dev/null
	images/components/debian-iptables/build.sh $(DEBIAN_IPTABLES) $@

$(IMAGES_OUT)/default-cni.yaml: images/components/meshnet/default-cni.yaml
	@mkdir -p $(dir $@)
	sed 's|@MESHNET_IMAGE@|$(MESHNET_IMAGE)|' $< >$@.tmp && mv $@.tmp $@

## components-test: the CNI daemon's plan and appliers (netns tests need root) and the test images
components-test:
	$(GO) test -count=1 ./images/components/... ./test/images/...

## component-images-test: run the built images together on a Docker network (etcd, kube-apiserver,
## controller-manager, scheduler, kube-proxy iptables+nftables, CoreDNS, pause, meshnet)
.PHONY: component-images-test
component-images-test: k8s-binaries component-images
	@$(foreach i,$(COMPONENT_IMAGES),docker image inspect $(IMG_$(i)) >/dev/null 2>&1 || docker load -q -i $(IMAGES_OUT)/$(i).tar;)
	$(GO) test -tags imagetest -count=1 -timeout 15m -v ./images/components/imagetest/

# internal/kubeapi (real etcd + kube-apiserver for controller tests) and the CoreDNS test of
# clusterset.local fail under CI=true without these binaries, so unit tests build them
# first (no-op when up to date).
unit-test-binaries: $(K8S_OUT)/kube-apiserver $(K8S_OUT)/etcd $(COREDNS_BIN)
