#!/bin/sh
# Print the suite's closing line "N passed, N failed, N skipped" from the
# automake harness's test-suite.log (each TAP "ok" line counts once).
log=${1:-test-suite.log}
if [ ! -f "$log" ]; then
	echo "summary: $log is missing (the build or the harness failed)" >&2
	echo "0 passed, 1 failed"
	exit 1
fi
get() { sed -n "s/^# $1: *\([0-9]*\)$/\1/p" "$log" | head -n 1; }
pass=$(get PASS); fail=$(get FAIL); xpass=$(get XPASS); err=$(get ERROR); skip=$(get SKIP); xfail=$(get XFAIL)
failed=$(( ${fail:-0} + ${xpass:-0} + ${err:-0} ))
passed=$(( ${pass:-0} + ${xfail:-0} ))
echo "${passed} passed, ${failed} failed, ${skip:-0} skipped"
[ "$failed" -eq 0 ]
