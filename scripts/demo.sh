#!/usr/bin/env bash
# make demo-netns: a broker and two clusters linked by tunnelmesh, every part real,
# in network namespaces this script creates (nothing touches the host's own
# network namespace). Background processes are started with `ip netns exec`
# directly, so $! is the process itself (ip execs it) and cleanup reaches it. Each cluster is a gateway namespace with a "pod"
# namespace behind it; the gateways find each other through the broker and
# build WireGuard tunnels; then pod→pod traffic crosses them.
# DEMO_KEEP=1 leaves everything running for you to look at.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: needs root (network namespaces, WireGuard devices)"; exit 1; }
scripts/deps.sh
BIN=$PWD/bin
make --no-print-directory build >/dev/null

P=tmdemo
WORK=$(mktemp -d /tmp/tunnelmesh-demo.XXXXXX)
BROKER_IP=192.0.2.2
URL=https://$BROKER_IP:8443
PIDS=()

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ns() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }

cleanup() {
  [ "${DEMO_KEEP:-}" = 1 ] && { echo "DEMO_KEEP=1: namespaces $P-* and $WORK kept; delete with: ip -all netns delete (or one by one)"; return; }
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for n in $(ip netns list | awk -v p="$P-" 'index($1,p)==1{print $1}'); do ip netns del "$n"; done
  rm -rf "$WORK"
}
trap cleanup EXIT

for n in $(ip netns list | awk -v p="$P-" 'index($1,p)==1{print $1}'); do ip netns del "$n"; done

step "underlay: a bridge in its own namespace, the broker on 192.0.2.2"
ip netns add $P-ul
ns ul ip link add br0 type bridge
ns ul ip link set br0 up
attach() { # attach <ns> <addr/len>
  ip netns add $P-$1
  ip link add "$P-$1" netns $P-ul type veth peer name eth0 netns $P-$1
  ns ul ip link set "$P-$1" master br0 up
  ns "$1" ip addr add "$2" dev eth0
  ns "$1" ip link set eth0 up
  ns "$1" ip link set lo up
}
attach broker $BROKER_IP/24
ns broker "$BIN/broker" init --data-dir "$WORK/broker" --san $BROKER_IP
ip netns exec $P-broker "$BIN/broker" serve --data-dir "$WORK/broker" --listen $BROKER_IP:8443 --log-level warn &
PIDS+=($!)
for _ in $(seq 50); do ns broker curl -fsS --cacert "$WORK/broker/ca.crt" $URL/readyz >/dev/null 2>&1 && break; sleep 0.2; done

# cluster <name> <n>: gateway 192.0.2.1n, pods 10.n.0.0/16, services 10.10n.0.0/16
cluster() {
  local c=$1 n=$2 dir=$WORK/$1
  mkdir -p "$dir"
  attach "gw-$c" 192.0.2.1$n/24
  ip netns add $P-pod-$c
  ip link add pods netns $P-gw-$c type veth peer name eth0 netns $P-pod-$c
  ns "gw-$c" ip addr add 10.$n.0.1/24 dev pods
  ns "gw-$c" ip link set pods up
  ns "pod-$c" ip addr add 10.$n.0.2/24 dev eth0
  ns "pod-$c" ip link set eth0 up
  ns "pod-$c" ip link set lo up
  ns "pod-$c" ip route add default via 10.$n.0.1
  ns broker "$BIN/broker" token create --data-dir "$WORK/broker" --url $URL --ttl 10m --description "demo $c" > "$dir/join.token"
  echo "cluster $c: pod CIDR 10.$n.0.0/16, service CIDR 10.10$n.0.0/16, gateway 192.0.2.1$n, pod 10.$n.0.2"
  ip netns exec "$P-gw-$c" "$BIN/gateway" run --cluster-id "$c" --pod-cidr 10.$n.0.0/16 --service-cidr 10.10$n.0.0/16 \
    --broker $URL --ca-file "$WORK/broker/ca.crt" --join-token-file "$dir/join.token" \
    --credential-file "$dir/credential" --key-file "$dir/private.key" --run-dir "$dir/run" \
    --hostname "gw-$c" --metrics 127.0.0.1:9570 --log-level warn &
  PIDS+=($!)
}

step "two clusters join with one-time tokens and start their gateways"
cluster east 1
cluster west 2

step "waiting for the tunnels (health probes through them)"
for _ in $(seq 60); do
  ok=$(ns gw-east curl -fsS 127.0.0.1:9570/metrics 2>/dev/null | awk '/^tunnelmesh_gateway_connections\{status="connected"\}/{print $2}')
  [ "${ok:-0}" = 1 ] && break; sleep 0.5
done
[ "${ok:-0}" = 1 ] || { echo "demo: tunnel east→west did not come up"; exit 1; }

step "the broker's view (admin credential)"
ns broker curl -fsS --cacert "$WORK/broker/ca.crt" -H "Authorization: Bearer $(cat "$WORK/broker/admin.token")" $URL/v1/snapshot |
  jq -r '"revision \(.revision)", (.clusters[] | "cluster \(.id): pods \(.podCIDRs|join(",")) services \(.serviceCIDRs|join(",")) tunnel \(.tunnelIP)"),
         (.gateways[] | "gateway \(.hostname) of \(.clusterID): \(.privateIP):\(.port) key \(.publicKey[0:12])… active=\(.active) stale=\(.stale) " + ([.health[]? | "\(.cluster)=\(.status)"]|join(" ")))'

step "WireGuard on east's gateway (wg show, through the gateway's UAPI socket)"
EAST_GW=$(pgrep -f -- "--cluster-id east" | head -1)
nsenter -t "$EAST_GW" -m -n wg show tmesh0 | sed 's/^/  /'

step "routes east's gateway programmed (protocol 77)"
ns gw-east ip route show proto 77 | sed 's/^/  /'

step "pod in east → pod in west: ping"
ns pod-east ping -c 3 -i 0.2 10.2.0.2 | tail -2

step "pod in east → pod in west: TCP throughput (iperf3, 5 s, one stream)"
ns pod-west iperf3 -s -1 -D -B 10.2.0.2 >/dev/null
sleep 0.3
ns pod-east iperf3 -c 10.2.0.2 -t 5 -f g | grep -E 'sender|receiver' | sed 's/^/  /'

step "done"
echo "Every packet above crossed a WireGuard tunnel between the two gateways; the pods kept their own IPs (no NAT)."
