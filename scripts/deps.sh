#!/usr/bin/env bash
# Installs the Debian packages tunnelmesh's build, tests and benchmarks use.
# Idempotent: does nothing when every command is already there.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have iperf3      || need+=(iperf3)
have ping        || need+=(iputils-ping)
have wg          || need+=(wireguard-tools)
have debootstrap || need+=(debootstrap)
have nft         || need+=(nftables)
have ip          || need+=(iproute2)
have dig         || need+=(dnsutils)
have dockerd     || need+=(docker.io)
have jq          || need+=(jq)
have etcd        || need+=(etcd-server)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing ${need[*]} and not root; install them or run as root" >&2
  exit 1
fi
echo "deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
