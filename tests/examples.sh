#!/bin/sh
# The example sessions in sessions/examples replay on the demo they were
# recorded on (masq sessions load, then masq replay with the demo's paths),
# under every numeric environment this machine offers, in this one run:
# OpenBLAS's native kernels and, where the CPU has AVX2, OPENBLAS_CORETYPE=
# Haswell; this build and the other flavour ($MASQ_ALT: plain when this one
# has sanitizers, ASan + UBSan when it has none).  The examples were
# recorded elsewhere: a replay reproduces their kernel set when the CPU can
# run it, or compares within tolerances, and must match either way.
. "$srcdir/lib.sh"
w=$(workdir examples)
"$MASQ" demo "$w/demo" --preset tiny >/dev/null
set -- "$top_srcdir"/sessions/examples/*.sql
check "there are at least three example sessions" test $# -ge 3
builds="$MASQ"
if [ -n "${MASQ_ALT:-}" ] && [ -x "$MASQ_ALT" ]; then builds="$builds $MASQ_ALT"
else not_ok "the other build flavour is there (MASQ_ALT=${MASQ_ALT:-})"; fi
envs=native
grep -qw avx2 /proc/cpuinfo 2>/dev/null && envs="native Haswell"
for f in "$@"; do
	ex=$(basename "$f" .sql)
	sed "s|DEMO|$w/demo|g" "$f" > "$w/$ex.sql"
	for b in $builds; do
		case $b in *masq-alt) flavour="the other flavour" ;; *) flavour="this build" ;; esac
		for e in $envs; do
			db="$w/$ex-$(basename "$b")-$e.db"
			rm -f "$db"
			check "$ex ($flavour, $e kernels): loads into a fresh database" sh -c "'$b' sessions load '$w/$ex.sql' --db '$db' >/dev/null"
			if [ "$e" = native ]; then
				env -u OPENBLAS_CORETYPE "$b" replay --db "$db" > "$w/$ex.out" 2> "$w/$ex.err"; rc=$?
			else
				OPENBLAS_CORETYPE=$e "$b" replay --db "$db" > "$w/$ex.out" 2> "$w/$ex.err"; rc=$?
			fi
			mode=$(sed -n 's/.*replayed: every recorded result matches (\([a-z ]*\)[;)].*/\1/p' "$w/$ex.out")
			if [ $rc -eq 0 ]; then ok "$ex ($flavour, $e kernels): replays, every result matches ($mode)"
			else not_ok "$ex ($flavour, $e kernels): replays, every result matches (exit $rc; regenerate with sessions/examples/make-examples.sh if the numerics changed on purpose)"; sed 's/^/# /' "$w/$ex.err"; fi
			sed 's/^/# /' "$w/$ex.out" | head -n 3
		done
	done
done
done_testing
