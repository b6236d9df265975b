# Sourced by build.sh: build_base makes the node's base image $base from a
# debootstrapped Debian ($SUITE, packages.txt) plus rootfs/. Everything in
# this file, packages.txt and rootfs/ is hashed into the base image's tag.
# shellcheck shell=bash

mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  # the first Debian (non-security) URI the host's apt uses
  { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
    grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}'; } |
    grep -v security | head -1 || true
}

build_base() {
  if ! command -v debootstrap >/dev/null; then
    [ "$(id -u)" = 0 ] || die "debootstrap is not installed (make deps)"
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null ||
      die "apt-get install debootstrap failed"
  fi
  local pkgs root=$work/rootfs
  pkgs=$(grep -vE '^\s*(#|$)' "$here/packages.txt" | paste -sd, -)
  say "debootstrap $SUITE minbase + $pkgs"
  local t=$(date +%s)
  # shellcheck disable=SC2046
  debootstrap --variant=minbase --include="$pkgs" "$SUITE" "$root" $(mirror) >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  say "debootstrap took $(( $(date +%s) - t )) s"
  # slim: no package caches, docs or man pages in a node
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
  cp -a "$here/rootfs/." "$root/"
  chmod 0755 "$root/usr/local/bin/tm-node-entrypoint" "$root/usr/local/libexec/tunnelmesh/kubelet-cgroups"
  # only the services a node needs start at boot
  find "$root/etc/systemd/system" -path '*.wants/*' -delete
  rm -f "$root"/lib/systemd/system/multi-user.target.wants/* \
    "$root"/lib/systemd/system/local-fs.target.wants/* \
    "$root"/lib/systemd/system/sockets.target.wants/*udev* \
    "$root"/lib/systemd/system/sockets.target.wants/*initctl* \
    "$root"/lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service
  chroot "$root" systemctl enable containerd.service kubelet.service >/dev/null 2>&1 ||
    die "systemctl enable in the root filesystem failed"
  chroot "$root" systemctl set-default multi-user.target >/dev/null 2>&1
  chroot "$root" systemctl mask systemd-binfmt.service systemd-modules-load.service \
    getty@tty1.service console-getty.service serial-getty@.service \
    sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
    systemd-udevd.service systemd-udev-trigger.service >/dev/null 2>&1
  mkdir -p "$root/etc/kubernetes/manifests" "$root/opt/cni/bin" "$root/etc/cni/net.d" \
    "$root/usr/local/libexec/tunnelmesh"
  : >"$root/etc/machine-id"
  tar -C "$root" --numeric-owner --xattrs -c . |
    docker import --change 'ENV container=docker' - "$base" >/dev/null || die "docker import failed"
  say "base image $base built in $(( $(date +%s) - t )) s"
  for old in $(docker images --format '{{.Repository}}:{{.Tag}}' tunnelmesh/kind-node-base | grep -vxF "$base"); do
    docker rmi "$old" >/dev/null 2>&1 || true
  done
}

