#!/usr/bin/env bash
# Builds tunnelmesh/debian-iptables:bookworm, the base of the kube-proxy image: Debian
# bookworm minbase + iptables (nft backend, Debian's default), nftables and conntrack,
# from Debian's archive with debootstrap, then `docker import`. No registry involved.
# Usage: build.sh IMAGE_TAG OUT_STAMP
set -euo pipefail
tag=${1:?image tag}
stamp=${2:?stamp file}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || { echo "debian-iptables: debootstrap missing (make deps)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "debian-iptables: debootstrap needs root" >&2; exit 1; }
root=$(mktemp -d /tmp/debian-iptables.XXXXXX)
trap 'rm -rf "$root"' EXIT
start=$(date +%s)
debootstrap --variant=minbase --include=iptables,nftables,conntrack,ca-certificates \
  bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# iptables-nft is bookworm's default alternative; make it explicit.
chroot "$root" update-alternatives --set iptables /usr/sbin/iptables-nft >/dev/null
chroot "$root" update-alternatives --set ip6tables /usr/sbin/ip6tables-nft >/dev/null
rm -rf "$root"/usr/share/{doc,man,info,locale} "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* \
  "$root"/var/log/* "$root"/usr/share/common-licenses
tar -C "$root" --numeric-owner -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$tag" >/dev/null
echo "$tag" >"$stamp"
echo "debian-iptables: $tag built in $(( $(date +%s) - start )) s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%d MB", $1/1e6}'))"
