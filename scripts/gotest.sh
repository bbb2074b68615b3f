#!/usr/bin/env bash
# Runs go test over the given packages with the race detector, keeps the
# verbose log in bin/test.log, and ends with a "N passed, N failed, N skipped"
# line. Under CI=true a skipped test is a failure: CI has root, /dev/fuse and
# QEMU, so nothing may be skipped there.
set -uo pipefail
mkdir -p bin
log=bin/test.log
# PIPESTATUS is read right after the pipeline: go test's own status (a
# trailing "|| true" would make it true's).
go test -race -count=1 -timeout 20m -v "$@" 2>&1 | tee "$log" | grep -E '^(=== RUN|--- (FAIL|SKIP)|FAIL|ok|panic)' | grep -v '^=== RUN'
status=${PIPESTATUS[0]}
passed=$(grep -c -- '--- PASS' "$log")
failed=$(grep -c -- '--- FAIL' "$log")
skipped=$(grep -c -- '--- SKIP' "$log")
if [ "$failed" -gt 0 ]; then
	# What the failing tests said, so that a CI excerpt shows the cause:
	# with -v a test's log lines come before its "--- FAIL" line.
	echo "--- failure details (from $log):"
	grep -B 40 -A 3 -- '--- FAIL' "$log" | grep -v '^=== \(RUN\|PAUSE\|CONT\)' | cut -c1-300 | head -n 200
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
if [ "${CI:-}" = true ] && [ "$skipped" -gt 0 ]; then
	echo "CI=true: skipped tests count as failures:"
	grep -- '--- SKIP' "$log"
	exit 1
fi
exit "$status"
