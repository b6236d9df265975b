# components.mk — everything that goes into the kind node image and the project images,
# built here from the Go module proxy (no container registry is ever used).
#
#   make k8s-binaries      _output/k8s/bin/{kubelet,kubeadm,kubectl,kube-apiserver,...} (v1.36.0)
#   make etcd-binary       _output/k8s/bin/etcd (for controller tests with a real apiserver)
#   make cni-plugins       _output/cni/bin/{bridge,host-local,loopback,portmap,ptp}
#   make component-images  registry.k8s.io/* images kubeadm v1.36.0 expects + our CNI daemon,
#                          saved to _output/images/*.tar, plus _output/images/default-cni.yaml
#   make project-images    tunnelmesh broker/gateway + echoserver/netclient test images

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
