#!/usr/bin/env bash
# Builds the tunnelmesh kind node image with no container registry:
#   base  = debootstrap'ed Debian bookworm (packages.txt) + rootfs/ → docker import (base.sh)
#           tunnelmesh/kind-node-base:<hash of packages.txt, rootfs/, base.sh>
#   node  = base + kubelet/kubeadm/kubectl, CNI plugins, tm-runc-shim, crictl, kind's
#           /kind files, and every control-plane/CNI image preloaded into the
#           node's containerd (content only; CRI unpacks on first use) → docker
#           commit + Dockerfile → tunnelmesh/kind-node:<K8S_VERSION>-<hash of all inputs>
# An image whose tag (hash) already exists is reused. The chosen name is
# written to $OUT_FILE.
#
# Environment: K8S_VERSION, K8S_BIN (kubelet kubeadm kubectl), CNI_BIN (CNI
# plugins), IMAGES_DIR (*.tar from `docker save`, default-cni.yaml), OUT_FILE,
# DEBIAN_MIRROR (default: the host's apt mirror, else debootstrap's default).
# `build.sh base` builds (or reuses) only the base image and prints its name.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
K8S_VERSION=${K8S_VERSION:?}
K8S_BIN=${K8S_BIN:-$repo/_output/k8s/bin}
CNI_BIN=${CNI_BIN:-$repo/_output/cni/bin}
IMAGES_DIR=${IMAGES_DIR:-$repo/_output/images}
OUT_FILE=${OUT_FILE:-$repo/_output/node-image.txt}
SUITE=bookworm
say() { echo "node-image: $*" >&2; }
die() { say "$*"; exit 1; }
t0=$(date +%s)

docker info >/dev/null 2>&1 || die "no Docker engine answers (make docker-engine)"

work=$(mktemp -d /var/tmp/tm-node-build.XXXXXX)
cid=""
cleanup() {
  [ -n "$cid" ] && docker rm -f -v "$cid" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

# The shim is built from source each time (seconds, reproducible with -trimpath).
(cd "$repo" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/tm-runc-shim" ./cmd/tm-runc-shim) ||
  die "building tm-runc-shim failed"
# kind runs crictl in nodes (log collection, `kind load docker-image`)
(cd "$repo" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/crictl" ./images/node/crictl) ||
  die "building crictl failed"

# hash_tree prints "path mode sha256" for every file under its arguments.
hash_tree() {
  find "$@" -type f -print0 | sort -z | while IFS= read -r -d '' f; do
    printf '%s %s %s\n' "${f#"$here"/}" "$(stat -c %a "$f")" "$(sha256sum <"$f" | cut -c1-64)"
  done
}

base_hash=$( { hash_tree "$here/rootfs" "$here/packages.txt" "$here/base.sh"; echo "$SUITE"; } |
  sha256sum | cut -c1-12)
base=tunnelmesh/kind-node-base:$base_hash

if docker image inspect "$base" >/dev/null 2>&1; then
  say "base image $base reused"
else
  # shellcheck source=base.sh
  . "$here/base.sh"
  build_base
fi
if [ "${1:-}" = base ]; then echo "$base"; exit 0; fi

for b in kubelet kubeadm kubectl; do
  [ -x "$K8S_BIN/$b" ] || die "missing $K8S_BIN/$b (make k8s-binaries)"
done
cni=("$CNI_BIN"/*)
[ -e "${cni[0]}" ] || die "no CNI plugins in $CNI_BIN"
tars=("$IMAGES_DIR"/*.tar)
[ -e "${tars[0]}" ] || die "no image tarballs in $IMAGES_DIR (make component-images)"
[ -f "$IMAGES_DIR/default-cni.yaml" ] || die "missing $IMAGES_DIR/default-cni.yaml"


say "hashing inputs"
node_hash=$( { echo "$base_hash $K8S_VERSION"; hash_tree "$here/Dockerfile" "$here/build.sh";
  for f in "$work/tm-runc-shim" "$work/crictl" "$K8S_BIN"/kubelet "$K8S_BIN"/kubeadm "$K8S_BIN"/kubectl "${cni[@]}" \
    "$IMAGES_DIR/default-cni.yaml"; do
    echo "$(basename "$f") $(sha256sum <"$f" | cut -c1-64)"
  done
  # an image archive is identified by its manifest (tags, config and layer
  # digests), so saving the same image again does not rebuild the node image
  for t in "${tars[@]}"; do
    echo "$(basename "$t") $(tar -xOf "$t" manifest.json | sha256sum | cut -c1-64)"
  done; } | sha256sum | cut -c1-12)
image=tunnelmesh/kind-node:$K8S_VERSION-$node_hash

if docker image inspect "$image" >/dev/null 2>&1; then
  say "$image reused (inputs unchanged) in $(( $(date +%s) - t0 )) s"
  mkdir -p "$(dirname "$OUT_FILE")" && echo "$image" >"$OUT_FILE"
  exit 0
fi

say "building $image"
# The image names kubeadm will use; the sandbox (pause) image is among them.
mapfile -t want < <("$K8S_BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null)
[ ${#want[@]} -gt 0 ] || die "kubeadm config images list gave nothing"
sandbox=$(printf '%s\n' "${want[@]}" | grep '/pause:' | head -1)
[ -n "$sandbox" ] || die "kubeadm lists no pause image"

cid=$(docker run -d --privileged --entrypoint /bin/sleep "$base" infinity)
dx() { docker exec -i "$cid" "$@"; }
for b in kubelet kubeadm kubectl; do docker cp "$K8S_BIN/$b" "$cid:/usr/bin/$b"; done
for f in "${cni[@]}"; do docker cp "$f" "$cid:/opt/cni/bin/$(basename "$f")"; done
docker cp "$work/tm-runc-shim" "$cid:/usr/local/libexec/tunnelmesh/tm-runc-shim"
docker cp "$work/crictl" "$cid:/usr/local/bin/crictl"
docker cp "$IMAGES_DIR/default-cni.yaml" "$cid:/kind/manifests/default-cni.yaml"
echo "$K8S_VERSION" | dx tee /kind/version >/dev/null
dx sed -i "s|@SANDBOX_IMAGE@|$sandbox|" /etc/containerd/config.toml
dx chmod 0755 /usr/bin/kubelet /usr/bin/kubeadm /usr/bin/kubectl /usr/local/libexec/tunnelmesh/tm-runc-shim

# Preload images: a containerd of the node itself imports them.
docker exec -d "$cid" sh -c 'echo $$ >/tmp/containerd.pid; exec containerd >/tmp/containerd.log 2>&1'
for _ in $(seq 60); do dx ctr version >/dev/null 2>&1 && break; sleep 0.5; done
dx ctr version >/dev/null 2>&1 || { dx cat /tmp/containerd.log >&2; die "containerd did not start in the build container"; }
for t in "${tars[@]}"; do
  say "preloading $(basename "$t")"
  dx ctr -n k8s.io images import --all-platforms --no-unpack --digests - <"$t" >/dev/null ||
    die "ctr import of $t failed"
done
mapfile -t have < <(dx ctr -n k8s.io images ls -q)
for n in "${have[@]}"; do
  # pinned images are never garbage-collected by kubelet
  dx ctr -n k8s.io images label "$n" io.cri-containerd.pinned=pinned >/dev/null
done
missing=()
for w in "${want[@]}"; do
  printf '%s\n' "${have[@]}" | grep -qxF "$w" || missing+=("$w")
done
if [ ${#missing[@]} -gt 0 ]; then
  # ALLOW_MISSING_IMAGES=1 is for debugging the node itself before every
  # component image exists; such an image cannot run a cluster.
  [ "${ALLOW_MISSING_IMAGES:-}" = 1 ] || die "image tarballs lack images kubeadm needs: ${missing[*]}"
  say "WARNING: missing ${missing[*]} (ALLOW_MISSING_IMAGES=1)"
fi
dx sh -c 'p=$(cat /tmp/containerd.pid); kill "$p"; for i in $(seq 50); do kill -0 "$p" 2>/dev/null || exit 0; sleep 0.2; done; exit 1' ||
  die "containerd did not stop"
dx sh -c 'rm -rf /tmp/* /run/containerd /var/lib/containerd/io.containerd.runtime.v2.task/* /var/lib/containerd/tmpmounts/*'

docker commit "$cid" "tunnelmesh/kind-node-build:$node_hash" >/dev/null
DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=tunnelmesh/kind-node-build:$node_hash" \
  --label "tunnelmesh.io/node-inputs=$node_hash" -t "$image" -f "$here/Dockerfile" "$here/empty-context" >/dev/null 2>"$work/build.err" ||
  { cat "$work/build.err" >&2; die "docker build of the final layer failed"; }
docker rmi "tunnelmesh/kind-node-build:$node_hash" >/dev/null
mkdir -p "$(dirname "$OUT_FILE")" && echo "$image" >"$OUT_FILE"
say "$image built in $(( $(date +%s) - t0 )) s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"

# Older tags of this image are garbage; drop those no container uses.
for old in $(docker images --format '{{.Repository}}:{{.Tag}}' tunnelmesh/kind-node | grep -vxF "$image"); do
  docker rmi "$old" >/dev/null 2>&1 || true
done
