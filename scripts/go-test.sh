#!/usr/bin/env bash
# go-test.sh LOG CMD...: run a `go test` command, its output both on the
# terminal and in LOG. When it fails, end with a digest whose last lines say
# what failed: a timed-out test binary prints every goroutine's stack, so
# without it the end of the log (all a CI report may keep) is some
# goroutine's stack, never the name of the test that hung.
#
# The digest, most telling last: the stacks of test goroutines (test
# functions first: those are the blocked tests), the failed tests' messages,
# then the failed tests, the tests a timed-out binary was running and the
# failed packages.
set -uo pipefail
log=$1
shift
mkdir -p "$(dirname "$log")"
"$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] && exit 0

echo
echo "=== digest of the failure (the whole output: $log)"
awk '
  function keep() {
    if (blk ~ /_test\.go:/) { if (blk ~ /testing\.tRunner/) tests[nt++] = blk; else others[no++] = blk }
    blk = ""
  }
  function show(b,   n, l, i) { n = split(b, l, "\n"); for (i = 1; i <= n && i <= 30; i++) print l[i]; print "" }
  /^goroutine [0-9]+ \[/ { keep(); inblk = 1; blk = $0; next }
  inblk && /^($|FAIL|ok  |PASS$)/ { keep(); inblk = 0; next }
  inblk { blk = blk "\n" $0 }
  END { keep(); for (i = 0; i < nt; i++) show(tests[i]); for (i = 0; i < no; i++) show(others[i]) }
' "$log" | head -n 300
echo "--- what the failed tests said (without -v go test prints a test's log only when it fails):"
grep -E '^\s+[^ ]+_test\.go:[0-9]+: ' "$log" | cut -c1-300 | head -n 40
echo "--- what failed:"
grep -E '^\s*--- FAIL|^panic: |^\s+running tests:|^\s+Test[^ ]* \([0-9hms.]+\)$|^FAIL\s' "$log" | head -n 60
exit "$rc"
