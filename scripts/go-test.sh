#!/usr/bin/env bash
# go-test.sh LOG CMD...: run a `go test` command, its output both on the
# terminal and in LOG. When it fails, end with a digest: what failed, and for
# a test binary that timed out, the tests still running and the stacks of the
# goroutines stuck inside the tests. A timed-out binary prints every goroutine,
# so without the digest the last lines of the log (all a CI report may keep)
# are some goroutine's stack, never the name of the test that hung.
set -uo pipefail
log=$1
shift
mkdir -p "$(dirname "$log")"
"$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] && exit 0

echo
echo "=== digest of the failure (the whole output: $log)"
# Without -v, go test prints a test's log lines only when it fails.
grep -E '^\s*--- FAIL|^\s+[^ ]+_test\.go:[0-9]+: |^FAIL|^panic: |^\s+Test[^ ]* \([0-9hms.]+\)$|^\s+running tests:' "$log" | head -n 150
# Goroutine stacks that run test code: first those of test functions
# (testing.tRunner: the tests that are blocked), then the goroutines they
# started, 40 lines of each at most.
awk '
  function keep() {
    if (blk ~ /_test\.go:/) { if (blk ~ /testing\.tRunner/) tests[nt++] = blk; else others[no++] = blk }
    blk = ""
  }
  function show(b,   n, l, i) { n = split(b, l, "\n"); for (i = 1; i <= n && i <= 40; i++) print l[i]; print "" }
  /^goroutine [0-9]+ \[/ { keep(); inblk = 1; blk = $0; next }
  inblk && /^($|FAIL|ok  |PASS$)/ { keep(); inblk = 0; next }
  inblk { blk = blk "\n" $0 }
  END { keep(); for (i = 0; i < nt; i++) show(tests[i]); for (i = 0; i < no; i++) show(others[i]) }
' "$log" | head -n 400
exit "$rc"
