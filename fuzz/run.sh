#!/bin/sh
# run.sh: make fuzz (HACKING.md, Fuzzing).  Usage: run.sh SRCDIR BUILDDIR TARGET...
#
# Runs each target's harness (BUILDDIR/fuzz/fuzz_TARGET) for FUZZ_SECONDS
# seconds (default 60), FUZZ_JOBS at a time (default 1), on its working
# corpus BUILDDIR/fuzz/corpus/TARGET (where new inputs go) and its seeds
# BUILDDIR/fuzz/seeds/TARGET, with the dictionary SRCDIR/fuzz/TARGET.dict;
# a crash, leak, timeout or OOM input goes to BUILDDIR/fuzz/findings/TARGET/
# and the whole log to BUILDDIR/fuzz/logs/TARGET.log.  Scratch files go
# under FUZZ_TMPDIR (default /dev/shm, else BUILDDIR/fuzz/tmp).  Prints per target
# the executions, the coverage (cov: and ft: of libFuzzer's last status
# line) and executions per second; exits 1 when any target found anything
# or did not run.

srcdir=$1
builddir=$2
shift 2
secs=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-1}
case $secs in '' | *[!0-9]*) echo "run.sh: FUZZ_SECONDS must be a number of seconds, not '$secs'" >&2; exit 2 ;; esac
case $jobs in '' | 0 | *[!0-9]*) echo "run.sh: FUZZ_JOBS must be a positive number, not '$jobs'" >&2; exit 2 ;; esac
fz=$builddir/fuzz
mkdir -p "$fz/logs" || exit 2
# Scratch files (each input is written as a file, some as a database) on
# a memory file system when there is one: FUZZ_TMPDIR, else /dev/shm.
tmpbase=${FUZZ_TMPDIR:-/dev/shm}
if [ ! -d "$tmpbase" ] || [ ! -w "$tmpbase" ]; then
	tmpbase=$fz/tmp
	mkdir -p "$tmpbase" || exit 2
fi

run_one() {
	t=$1
	mkdir -p "$fz/corpus/$t" "$fz/findings/$t" || return 2
	# the harness's scratch directory goes here, and goes when it has run
	tmp=$tmpbase/masq-fuzz-$t.$$
	rm -rf "$tmp"
	mkdir -p "$tmp" || return 2
	TMPDIR=$tmp OPENBLAS_NUM_THREADS=1 \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:symbolize=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    "$fz/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -detect_leaks=1 \
	    -print_final_stats=1 -dict="$srcdir/fuzz/$t.dict" -artifact_prefix="$fz/findings/$t/" \
	    "$fz/corpus/$t" "$fz/seeds/$t" >"$fz/logs/$t.log" 2>&1
	echo $? >"$fz/logs/$t.rc"
	rm -rf "$tmp"
}

targets=$*
echo "make fuzz: $secs s per target, $jobs at a time; logs in $fz/logs"
while [ $# -gt 0 ]; do
	i=0
	while [ $# -gt 0 ] && [ $i -lt "$jobs" ]; do
		run_one "$1" &
		shift
		i=$((i + 1))
	done
	wait
done

# What happened, from each log: libFuzzer's last status line ("#N ... cov: C
# ft: F corp: ...") and its final stats (-print_final_stats=1).
fail=0
printf '%-12s %-9s %12s %7s %7s %9s %6s  %s\n' target result executions cov ft exec/s corpus findings
for t in $targets; do
	log=$fz/logs/$t.log
	rc=$(cat "$fz/logs/$t.rc" 2>/dev/null || echo none)
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
	last=$(grep -E '^#[0-9]+.* cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)
	cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
	ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
	corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\).*/\1/p')
	if grep -q 'ERROR: libFuzzer: timeout' "$log"; then
		what=timeout
	elif grep -q -e 'ERROR: libFuzzer: out-of-memory' -e 'ERROR: libFuzzer: malloc' "$log"; then
		what=oom
	elif grep -q 'ERROR: LeakSanitizer' "$log"; then
		what=leak
	elif grep -q -e 'ERROR: AddressSanitizer' -e 'runtime error:' -e 'ERROR: libFuzzer: deadly signal' \
	    -e 'ERROR: libFuzzer: fuzz target exited' "$log"; then
		what=crash
	elif [ "$rc" != 0 ]; then
		what="exit-$rc"
	else
		what=ok
	fi
	found=$(sed -n 's/^artifact_prefix=.*; Test unit written to \(.*\)$/\1/p' "$log" | tr '\n' ' ')
	[ "$what" = ok ] || fail=1
	printf '%-12s %-9s %12s %7s %7s %9s %6s  %s\n' "$t" "$what" "${execs:-?}" "${cov:-?}" "${ft:-?}" \
	    "${speed:-?}" "${corp:-?}" "${found:--}"
done
if [ $fail -ne 0 ]; then
	echo "make fuzz: FAILED: see the logs in $fz/logs and the inputs in $fz/findings; HACKING.md (Fuzzing)"
	echo "  says how a finding becomes a regression case in tests/corpus"
	exit 1
fi
echo "make fuzz: no findings"
