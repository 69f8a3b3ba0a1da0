#!/bin/sh
# Fault injection (issue 15): writes that fail.  tests/faultshim.so,
# preloaded, fails the Nth write, fsync, rename or truncate on a file under
# a directory (tests/faultshim.c says which calls).
. "$srcdir/lib.sh"
w=$(workdir faults)
shim=$builddir/faultshim.so
[ -f "$shim" ] || skip_all "no $shim (make check builds it)"
command -v sqlite3 >/dev/null 2>&1 || skip_all "no sqlite3 shell for PRAGMA integrity_check (Debian: sqlite3)"
w=$(cd "$w" && pwd -P)	# the shim compares canonical paths
# An ASan masq refuses a library preloaded ahead of libasan unless told.
asan=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0
env LD_PRELOAD="$shim" ASAN_OPTIONS="$asan" FAULT_COUNT_FILE="$w/probe" "$MASQ" --version >/dev/null 2>"$w/probe.err"
why=$(head -n 1 "$w/probe.err")
[ -s "$w/probe" ] || skip_all "LD_PRELOAD does not reach $MASQ (a static build?)${why:+: $why}"
# One BLAS thread: the threads write no file, and the runs are shorter.
OPENBLAS_NUM_THREADS=1
export OPENBLAS_NUM_THREADS

q() { sqlite3 -batch "$@" 2>&1; }
"$MASQ" demo "$w/demo" --preset tiny >/dev/null || exit 99
RUN="run --model $w/demo/model --calib $w/demo/calib.safetensors --method mas-cmc --epochs 0"

# ---- regressions ----------------------------------------------------------------
mkdir "$w/r"
# A new database switches to WAL in a transaction of the rollback journal
# that commits after the pragma has answered "wal"; its failed sync was
# ignored, and the whole run was recorded in rollback-journal mode.
env LD_PRELOAD="$shim" ASAN_OPTIONS="$asan" FAULT_OPS=fsync FAULT_AT=1 FAULT_PATHS="$w/r/wal.db-journal" \
    "$MASQ" $RUN --db "$w/r/wal.db" >/dev/null 2>"$w/r/wal.err"
rc=$?
check "a failed commit of the switch to WAL fails the run (exit $rc)" \
	sh -c "test $rc -eq 2 && grep -q 'cannot switch to WAL mode: disk I/O error' '$w/r/wal.err'"
check "... and leaves no database behind" test ! -e "$w/r/wal.db"
check "... and the run again records in WAL mode" sh -c "'$MASQ' $RUN --db '$w/r/wal.db' >/dev/null 2>&1 &&
	test \"\$(sqlite3 '$w/r/wal.db' 'PRAGMA journal_mode')\" = wal"

# An export whose result cannot be recorded is complete in its directory
# (renamed into place, then the result's commit failed): the message says
# so, since a user would otherwise retry and meet "exists".  The last
# write of the WAL is that commit's; two copies of one database make the
# same calls.
"$MASQ" $RUN --db "$w/r/x.db" >/dev/null 2>&1 && cp "$w/r/x.db" "$w/r/a.db" && cp "$w/r/x.db" "$w/r/b.db" &&
	ln -s x.db.blobs "$w/r/a.db.blobs" && ln -s x.db.blobs "$w/r/b.db.blobs" || exit 99
env LD_PRELOAD="$shim" ASAN_OPTIONS="$asan" FAULT_OPS=write FAULT_PATHS="$w/r/a.db-wal" FAULT_COUNT_FILE="$w/r/count" \
    "$MASQ" export --db "$w/r/a.db" --session 1 --format masquant --out "$w/r/ea" >/dev/null 2>&1 || exit 99
C=$(sed -n 's/^calls //p' "$w/r/count")
env LD_PRELOAD="$shim" ASAN_OPTIONS="$asan" FAULT_OPS=write FAULT_AT="$C" FAULT_PATHS="$w/r/b.db-wal" \
    "$MASQ" export --db "$w/r/b.db" --session 1 --format masquant --out "$w/r/eb" >/dev/null 2>"$w/r/eb.err"
rc=$?
check "an export whose result cannot be recorded fails (exit $rc) and says the export is there" \
	sh -c "test $rc -eq 2 && grep -q 'eb is complete, but session 1 does not record it' '$w/r/eb.err'"
sums() { (cd "$1" && sha256sum $(ls | grep -v provenance)); }
check "... and it is complete" test "$(sums "$w/r/ea")" = "$(sums "$w/r/eb")"
check "... and the session records no export" \
	test "$(q "$w/r/b.db" "SELECT count(*) FROM events WHERE name = 'export' AND kind = 'result'")" = 0

done_testing
