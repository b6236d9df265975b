#!/usr/bin/env bash
# `make test`: everything CI runs, in phases, with each phase's time printed at
# the end so the budget is visible in every log.
#
# What does not depend on the unit tests is built beside them: once the
# binaries the unit tests need exist (kube-apiserver, etcd, CoreDNS), the kind
# node image (the other Kubernetes binaries, CNI plugins, component images) and
# the project images build in the background while the unit tests and the
# fuzzers run — most unit tests wait on real apiservers, timers and sockets,
# so the two cores have room. The e2e then starts with its images ready.
#
# The first failing phase ends the run (the background build is stopped) and
# the table still prints.
set -uo pipefail
cd "$(dirname "$0")/.."
MAKE=${MAKE:-make}
log_dir=_output/test-phases
mkdir -p "$log_dir"

names=() secs=() results=()
t_start=$(date +%s)
bg_pid=""

table() {
  echo
  echo "make test: phases (wall clock; the image build overlaps the unit tests)"
  printf '  %-34s %8s  %s\n' phase seconds result
  local i
  for i in "${!names[@]}"; do
    printf '  %-34s %8s  %s\n' "${names[$i]}" "${secs[$i]}" "${results[$i]}"
  done
  printf '  %-34s %8s\n' "total" "$(($(date +%s) - t_start))"
}

finish() {
  local rc=$1
  if [ -n "$bg_pid" ] && kill -0 "$bg_pid" 2>/dev/null; then
    kill -- -"$bg_pid" 2>/dev/null || kill "$bg_pid" 2>/dev/null
    wait "$bg_pid" 2>/dev/null
  fi
  table
  exit "$rc"
}

# phase NAME CMD...: run CMD in the foreground, record its time and result.
phase() {
  local name=$1; shift
  echo "=== phase: $name"
  local t0 rc
  t0=$(date +%s)
  "$@"; rc=$?
  names+=("$name"); secs+=("$(($(date +%s) - t0))")
  if [ "$rc" -eq 0 ]; then results+=(ok); else results+=("FAILED (exit $rc)"); finish "$rc"; fi
}

# disk_space: a full disk fails far from its cause — a CI run's node image
# could not import an image ("no space left on device"), another's etcd
# (likely the same cause) took no write — so a run that would fill it says so
# first. A clean clone's run took 8.3 GiB at its peak (kind node volumes,
# images, the build cache: 53.2 GiB free before, 45.0 GiB in the e2e); 20
# leaves room.
need_gib=${TEST_DISK_GIB:-20}
disk_space() {
  local path avail_kb short=0
  for path in "$PWD" "${TMPDIR:-/tmp}" /var/lib/docker "${HOME:-/root}"; do
    while [ ! -e "$path" ]; do path=$(dirname "$path"); done
    avail_kb=$(df -Pk "$path" | awk 'NR==2 {print $4}')
    echo "disk: $path: $((avail_kb / 1024 / 1024)) GiB free"
    if [ "$avail_kb" -lt $((need_gib * 1024 * 1024)) ]; then
      echo "disk: $path has less than the $need_gib GiB a run needs; free some (docker system prune, go clean -cache) or set TEST_DISK_GIB"
      short=1
    fi
  done
  if [ "$short" = 1 ] && [ "${CI:-}" = true ]; then return 1; fi
  return 0
}

phase "disk space" disk_space
phase "vet (gofmt, go vet, staticcheck)" $MAKE --no-print-directory deps vet
phase "unit-test binaries" $MAKE --no-print-directory unit-test-binaries

# The images need a Docker engine; without one the e2e phase reports it
# (fatal under CI=true, a skip elsewhere), so the background build only runs
# when an engine answers.
bg_t0=$(date +%s)
if scripts/docker-engine.sh >"$log_dir/docker-engine.log" 2>&1; then
  echo "=== phase (background): images -> $log_dir/images.log"
  set -m
  ( $MAKE --no-print-directory images >"$log_dir/images.log" 2>&1; echo $? >"$log_dir/images.rc" ) &
  bg_pid=$!
  set +m
else
  echo "=== no Docker engine answers yet; the e2e phase will say why (see $log_dir/docker-engine.log)"
fi

phase "unit tests" $MAKE --no-print-directory test-unit-run
phase "broker fault injection" $MAKE --no-print-directory test-broker-faults
phase "fuzz-brief" $MAKE --no-print-directory fuzz-brief

if [ -n "$bg_pid" ]; then
  echo "=== waiting for the background image build"
  wait "$bg_pid"
  bg_pid=""
  rc=$(cat "$log_dir/images.rc" 2>/dev/null || echo 1)
  names+=("images (background, from start)"); secs+=("$(($(date +%s) - bg_t0))")
  if [ "$rc" = 0 ]; then
    results+=(ok)
  else
    results+=("FAILED (exit $rc)")
    tail -n 40 "$log_dir/images.log"
    finish "$rc"
  fi
fi

phase "e2e (kind)" $MAKE --no-print-directory e2e
finish 0
