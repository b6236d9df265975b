#!/usr/bin/env bash
# Makes a Docker engine answer on this machine, able to run kind nodes.
#  1. If `docker info` answers, use that engine; otherwise install Debian's
#     docker.io when dockerd is missing and start dockerd (systemd when it is
#     PID 1, else a background dockerd logging to /var/log/tunnelmesh-dockerd.log).
#  2. Only where privileged containers cannot work — root's capability
#     bounding set lacks capabilities runc grants to --privileged containers —
#     build cmd/tm-runc-shim, install it as $SHIM and register it in
#     /etc/docker/daemon.json as the default runtime (dockerd reloads on SIGHUP).
#     On a normal host nothing is changed.
#  3. Raise the kernel's inotify limits where they are below what kind
#     needs for several clusters (kind's "known issues": every node's
#     kubelet, kube-proxy and containerd take inotify instances of root, which
#     all nodes share; at 128 a third cluster's kube-proxy fails with "too
#     many open files"). Never lowered.
#  4. Prove it: run a privileged container of a tiny locally made image.
# Exit status 0 = engine ready; 1 = no usable engine (message on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SHIM=/usr/local/libexec/tunnelmesh/tm-runc-shim
RUNTIME=tm-runc
LOG=/var/log/tunnelmesh-dockerd.log
say() { echo "docker-engine: $*" >&2; }
die() { say "$*"; exit 1; }

answers() { timeout 20 docker info >/dev/null 2>&1; }

# caps_incomplete: true when root's bounding set misses a capability the
# kernel knows (runc then cannot apply --privileged's capability set).
caps_incomplete() {
  local last bnd want
  last=$(cat /proc/sys/kernel/cap_last_cap)
  bnd=$((16#$(awk '/^CapBnd:/{print $2}' /proc/self/status)))
  want=$(( (1 << (last + 1)) - 1 ))
  [ $((bnd & want)) -ne "$want" ]
}

# apt_install PKG...: installs Debian packages (root only).
apt_install() {
  [ "$(id -u)" = 0 ] || die "$* not installed and we are not root"
  say "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
    die "apt-get install $* failed"
}

start_engine() {
  command -v docker >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1 || apt_install docker.io
  [ "$(id -u)" = 0 ] || die "no Docker engine answers and we are not root to start dockerd"
  if [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
    say "starting docker.service"
    systemctl start docker || die "systemctl start docker failed"
  else
    if ! pgrep -x dockerd >/dev/null; then
      say "starting dockerd (log $LOG)"
      # Without the caller's other descriptors: a lock the caller holds
      # (flock /work/e2e.lock make e2e) must not live on in the daemon.
      (
        for fd in /proc/self/fd/*; do
          n=${fd##*/}
          [ "$n" -gt 2 ] 2>/dev/null && eval "exec $n>&-" 2>/dev/null
        done
        exec setsid nohup dockerd >>"$LOG" 2>&1 </dev/null
      ) &
    fi
  fi
  for _ in $(seq 60); do answers && return 0; sleep 1; done
  die "dockerd did not answer within 60 s (see $LOG)"
}

install_shim() {
  local tmp
  tmp=$(mktemp)
  CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$tmp" ./cmd/tm-runc-shim ||
    die "building cmd/tm-runc-shim failed"
  mkdir -p "$(dirname "$SHIM")"
  if ! cmp -s "$tmp" "$SHIM"; then install -m 0755 "$tmp" "$SHIM"; fi
  rm -f "$tmp"
}

# register_runtime merges our runtime into daemon.json and reloads dockerd.
register_runtime() {
  local f=/etc/docker/daemon.json cur new
  mkdir -p /etc/docker
  cur=$( [ -s $f ] && cat $f || echo '{}')
  new=$(jq --arg n "$RUNTIME" --arg p "$SHIM" \
    '.runtimes[$n] = {path: $p} | ."default-runtime" = $n' <<<"$cur") ||
    die "$f is not valid JSON"
  if [ "$new" != "$(jq . <<<"$cur")" ]; then
    say "registering $RUNTIME ($SHIM) as dockerd's default runtime in $f"
    echo "$new" >$f
    if [ "$(ps -p 1 -o comm=)" = systemd ]; then systemctl reload docker || systemctl restart docker
    else
      [ -s /var/run/docker.pid ] || die "dockerd runs without /var/run/docker.pid; reload it by hand"
      kill -HUP "$(cat /var/run/docker.pid)"
    fi
    sleep 2
  fi
}

# probe runs a privileged container of a tiny image made from the host's
# /bin/true and its libraries (no registry needed).
probe() {
  if ! docker image inspect tunnelmesh/probe:1 >/dev/null 2>&1; then
    local d
    d=$(mktemp -d)
    mkdir -p "$d/root/bin"
    cp /bin/true "$d/root/bin/true"
    for lib in $(ldd /bin/true | grep -o '/[^ ]*'); do
      mkdir -p "$d/root$(dirname "$lib")" && cp -L "$lib" "$d/root$lib"
    done
    tar -C "$d/root" -c . | docker import - tunnelmesh/probe:1 >/dev/null
    rm -rf "$d"
  fi
  docker run --rm --privileged tunnelmesh/probe:1 /bin/true
}

# raise_inotify: fs.inotify limits up to kind's recommendation, never down.
raise_inotify() {
  local key want have
  for kv in fs.inotify.max_user_instances=512 fs.inotify.max_user_watches=524288; do
    key=${kv%=*} want=${kv#*=}
    have=$(cat "/proc/sys/${key//.//}")
    if [ "$have" -lt "$want" ]; then
      [ "$(id -u)" = 0 ] || die "$key is $have, below the $want kind needs for three clusters, and we are not root to raise it"
      echo "$want" >"/proc/sys/${key//.//}" || die "cannot raise $key to $want"
      say "raised $key from $have to $want (kind's recommendation; every kind node's kubelet and kube-proxy use them)"
    fi
  done
}

answers || start_engine
raise_inotify
if caps_incomplete; then
  [ "$(id -u)" = 0 ] || die "capability bounding set is incomplete and we are not root to register $RUNTIME"
  command -v jq >/dev/null || apt_install jq
  install_shim
  register_runtime
fi
probe 2>/tmp/tm-probe.err || die "a privileged container does not start: $(cat /tmp/tm-probe.err)"
say "ready ($(docker version -f '{{.Server.Version}}'), default runtime $(docker info -f '{{.DefaultRuntime}}'))"
