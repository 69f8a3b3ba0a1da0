#!/bin/sh
# Fault injection (issue 15): writes that fail during masq run, export,
# sessions load and blob writes.  tests/faultshim.so, preloaded, fails the
# Nth write, fsync, rename or truncate on a file under a directory
# (tests/faultshim.c says which calls).  First the cases of the bugs the
# sweep found; then the sweep: each operation runs once to count its
# calls, then again with one of them failing, and after every failure:
#   - masq exits non-zero with a message, not by a signal or with a
#     sanitizer report; it exits 0 only when the failed call is one it may
#     ignore, and then the operation is complete: the sync of a directory
#     (SQLite ignores a failed sync of the database's directory; an export
#     does not check its parent's after the rename that put it in place),
#     or a call of the checkpoint SQLite runs as masq closes the database
#     (the WAL still holds every commit);
#   - PRAGMA integrity_check says ok (on a copy, so that masq is the first
#     to open what the failure left), the session already in the database
#     is as it was, and a load added all of its session or nothing;
#   - no blob at its final name fails to hash to its name, no export is at
#     its final name unless complete (identical to one made without
#     faults), and no temporary file or directory is left behind;
#   - masq sessions list works, and so does the same operation again
#     without faults (after removing a complete export: an export never
#     overwrites).
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

# ---- the sweep: the operations ----------------------------------------------------
fs=$w/fs		# what the operations write, and nothing else
db=$fs/x.db
tree_sums() { (cd "$1" && sha256sum $(ls -A)) 2>&1; }
mkdir "$w/base" && "$MASQ" $RUN --wbits 8 --abits 8 --db "$w/base/w8.db" >/dev/null 2>&1 &&
	"$MASQ" sessions dump 1 --db "$w/base/w8.db" > "$w/base/w8.sql" || exit 99
E1=$(q "$w/base/w8.db" 'SELECT count(*) FROM events WHERE session = 1')
q "$w/base/w8.db" 'SELECT seq, kind, name, payload FROM events WHERE session = 1 ORDER BY seq' > "$w/base/s1.rows"

# run: a new database, the database's side (its blob directory is the
# blob operation's); blob: the blob writes of a run into a database that
# holds the W8A8 session; export-mq, export-ct: that session exported;
# load: its dump loaded into a database that holds it.
op_setup() {
	rm -rf "$fs" && mkdir "$fs" || exit 99
	case $1 in
	blob | export-*) cp "$w/base/w8.db" "$db" && cp -r "$w/base/w8.db.blobs" "$db.blobs" ;;
	load) cp "$w/base/w8.db" "$db" ;;
	esac
}
op_cmd() {
	case $1 in
	run | blob) echo "$RUN --db $db" ;;
	export-mq) echo "export --db $db --session 1 --format masquant --out $fs/out" ;;
	export-ct) echo "export --db $db --session 1 --format compressed-tensors --out $fs/out" ;;
	load) echo "sessions load $w/base/w8.sql --db $db" ;;
	esac
}
op_paths() { if [ "$1" = blob ]; then echo "$db.blobs"; else echo "$fs"; fi; }
op_exclude() { if [ "$1" = run ]; then echo "$db.blobs"; fi; }
# What an exit 0 must have left (COPY: the copy of the database).
op_done() {	# OP COPY
	case $1 in
	run) [ "$(q "$2" 'SELECT status FROM sessions WHERE id = 1')" = finished ] ;;
	blob) [ "$(q "$2" 'SELECT status FROM sessions WHERE id = 2')" = finished ] ;;
	export-*) same_export "$1" ;;
	load) [ "$(q "$2" 'SELECT count(*) FROM events WHERE session = 2')" = "$E1" ] ;;
	esac
}
same_export() { [ -d "$fs/out" ] && [ "$(tree_sums "$fs/out")" = "$(cat "$w/base/$1.sums")" ]; }
# faulty OP [VAR=VALUE...]: OP under the shim, its output in $w/out, $w/err.
faulty() {
	f_op=$1
	shift
	rm -f "$w/count" "$w/calls"
	env LD_PRELOAD="$shim" ASAN_OPTIONS="$asan" FAULT_OPS=write,fsync,rename,truncate \
	    FAULT_PATHS="$(op_paths "$f_op")" FAULT_EXCLUDE="$(op_exclude "$f_op")" \
	    FAULT_COUNT_FILE="$w/count" FAULT_LOG="$w/calls" "$@" "$MASQ" $(op_cmd "$f_op") >"$w/out" 2>"$w/err"
}

# The reference exports, made without faults where the trials write theirs.
for op in export-mq export-ct; do
	op_setup $op && "$MASQ" $(op_cmd $op) >/dev/null && tree_sums "$fs/out" > "$w/base/$op.sums" || exit 99
done

# ---- the sweep: one failure ---------------------------------------------------------
# trial OP N MODE: OP with its Nth counted call failing (MODE once: that
# call only, with EIO; sticky: every call from the Nth on, with ENOSPC, as
# on a full disk), then what it left.  Sets $what, $rc and $problems
# (empty when it survived); adds what the shim failed to $injected.
injected=0 runs=0 ignored=""
trial() {
	op=$1 N=$2 mode=$3 problems=""
	op_setup "$op"
	if [ "$mode" = sticky ]; then
		faulty "$op" FAULT_AT="$N" FAULT_STICKY=1 FAULT_ERRNO=ENOSPC
	else
		faulty "$op" FAULT_AT="$N" FAULT_ERRNO=EIO
	fi
	rc=$?
	runs=$((runs + 1))
	fcall=$(sed -n 's/^[0-9]* \(.*\) FAILED$/\1/p' "$w/calls" 2>/dev/null | head -n 1)
	k=$(sed -n 's/^injected //p' "$w/count" 2>/dev/null)
	injected=$((injected + ${k:-0}))
	what="call $N ($(echo "$fcall" | sed "s| [a-z]* $fs/| |; s| [a-z]* $fs\$| .|"))"
	if [ "$rc" -ge 128 ] || grep -qE 'Sanitizer|runtime error:' "$w/err"; then
		problems="$problems; crashed (exit $rc): $(grep -m 1 -E 'ERROR|runtime error' "$w/err")"
	elif [ ! -s "$w/count" ]; then
		problems="$problems; no count from the shim (exit $rc): masq left without running exit handlers"
	elif [ "${k:-0}" -eq 0 ]; then
		problems="$problems; fewer calls than when counted: nothing failed"
	elif [ "$rc" -ne 0 ] && ! grep -q '^masq: ' "$w/err"; then
		problems="$problems; exit $rc without a message"
	fi

	# what the failure left, before anything opens it again
	rm -rf "$w/copy" && mkdir "$w/copy"
	for f in "$db" "$db-wal" "$db-journal"; do [ -f "$f" ] && cp "$f" "$w/copy/"; done
	c=$w/copy/x.db
	if [ -f "$c" ]; then
		ic=$(q "$c" 'PRAGMA integrity_check')
		[ "$ic" = ok ] || problems="$problems; integrity_check: $ic"
		if [ "$op" != run ]; then
			q "$c" "SELECT seq, kind, name, payload FROM events WHERE session = 1 AND seq <= $E1 ORDER BY seq" |
			    cmp -s - "$w/base/s1.rows" || problems="$problems; session 1's events changed"
		fi
		if [ "$op" = load ]; then
			ns=$(q "$c" 'SELECT count(*) FROM sessions') ne=$(q "$c" 'SELECT count(*) FROM events WHERE session = 2')
			[ "$ns" = 1 ] || { [ "$ns" = 2 ] && [ "$ne" = "$E1" ]; } ||
			    problems="$problems; a partial load ($ns sessions, $ne events in the new one)"
		fi
	elif [ "$op" != run ]; then
		problems="$problems; the database is gone"
	fi
	if [ "$rc" -eq 0 ]; then
		why=$(ignorable "$op" "$N" "$fcall")
		if [ -z "$why" ]; then
			problems="$problems; exit 0 though $what failed"
		else
			case $ignored in *"$why"*) ;; *) ignored="$ignored${ignored:+, }$why" ;; esac
		fi
		[ -f "$c" ] && ! op_done "$op" "$c" && problems="$problems; exit 0 but the operation is not complete"
	fi
	bad=$(cd "$db.blobs" 2>/dev/null && sha256sum -- * 2>/dev/null | awk '$1 != $2 { printf " %s", $2 }')
	[ -z "$bad" ] || problems="$problems; blobs that do not hash to their names:$bad"
	left=$(ls -A "$fs" "$db.blobs" 2>/dev/null | grep '^\.' | tr '\n' ' ')
	[ -z "$left" ] || problems="$problems; temporaries left: $left"
	if [ -e "$fs/out" ]; then
		same_export "$op" || problems="$problems; an incomplete export at its final name"
		[ "$rc" -eq 0 ] || grep -q 'out is complete, but session 1 does not record it' "$w/err" ||
		    problems="$problems; the message does not say that the export is complete"
		rm -rf "$fs/out"
	fi

	# the next commands: sessions list (not after an export: the export
	# made again reads back the database's one session, all that sessions
	# list reads), then the operation again
	case $op in
	export-*) ;;
	*)	if ! "$MASQ" sessions list --db "$db" >"$w/next" 2>&1; then
			# a new database that failed is removed again
			[ "$op" = run ] && [ ! -e "$db" ] && grep -q 'no such session database' "$w/next" ||
			    problems="$problems; sessions list: $(head -n 1 "$w/next")"
		fi ;;
	esac
	"$MASQ" $(op_cmd "$op") >"$w/next" 2>&1 || problems="$problems; again: $(grep -m 1 '^masq' "$w/next")"
	case $op in export-*) same_export "$op" || problems="$problems; the export made again differs" ;; esac
	ic=$(q "$db" 'PRAGMA integrity_check')
	[ "$ic" = ok ] || problems="$problems; integrity_check after the next commands: $ic"
	problems=${problems#; }
}

# Why exit 0 is right after call N of OP failed (nothing: it is not).
ignorable() {	# OP N "OP KIND PATH"
	case $3 in
	"fsync dir "* | "fdatasync dir "*) echo "the sync of a directory"; return ;;
	esac
	[ "$2" -ge "$(cat "$w/ckpt-$1")" ] && echo "the checkpoint at close"
}

# Which calls to fail.  Every call, once each, would be about 600 runs
# (run 110 calls, blob 148, export-mq 204, export-ct 106, load 36) at 0.2
# to 0.4 s of CPU each under ASan with the checks: a few minutes.  So:
#   - the first and the last call of every streak of one call on one
#     file (the first fwrite of a blob, its last, its fflush, fsync and
#     rename, the directory's fsync, ...): every step of the operation;
#     the same steps with the same neighbours again (the next layer's
#     blobs, temporary names reduced to their kind) only the first time;
#   - every 4th call on the database's files: a commit of two WAL frames
#     writes four times, so every such transaction (every event the
#     session appends) has a failure; a one-frame commit may not.
# Each is failed once (EIO), and every 8th also from then on (ENOSPC, a
# full disk): 157 calls, 179 runs, measured at about 60 s of CPU under
# ASan and 32 s in a plain build on 2 cores; tests/faults.log has each
# operation's time.  FAULT_ALL=1 fails every call both ways instead.
select_calls() {	# LOG
	awk -v all="${FAULT_ALL:-0}" '
	{
		n = $1
		$1 = ""
		s = $0
		gsub(/\.tmp-[0-9]+-[0-9]+-/, ".tmp-", s)	# sess_blob_tmp: .tmp-PID-K-what
		a = "[A-Za-z0-9]"
		sub("/[.]tmp-" a a a a a a "$", "/.tmp-?", s)	# mkstemp
		gsub(/\.tmp-[0-9]+/, ".tmp", s)		# the export: .DIR.tmp-PID
		site[n] = s
		dbf[n] = (s ~ /\.db(-wal|-journal|-shm)?$/)
	}
	END {
		for (i = 1; i <= n; i++) {
			edge = i == 1 || i == n || site[i] != site[i - 1] || site[i] != site[i + 1]
			if (edge) {
				key = site[i - 1] "|" site[i] "|" site[i + 1]
				if (key in seen)
					edge = 0
				seen[key] = 1
			}
			if (all || edge || (dbf[i] && i % 4 == 1))
				print i
		}
	}' "$1"
}

# ---- the sweep ----------------------------------------------------------------------
nops=0 survived=1
for op in ${FAULT_ONLY:-run blob export-mq export-ct load}; do
	op_setup "$op"
	faulty "$op" || { not_ok "$op without faults: $(grep -m 1 '^masq' "$w/err")"; continue; }
	cp "$w/calls" "$w/calls-$op"
	C=$(sed -n 's/^calls //p' "$w/count")
	# the checkpoint at close: from the last sync of the WAL on, only the
	# database file itself
	awk -v db="$db" '{ p = $0; sub(/^[^ ]* [^ ]* [^ ]* /, "", p) }
	    p == db "-wal" && $2 == "fdatasync" { k = $1; bad = 0 } p != db && k && $1 > k { bad = 1 }
	    END { print (k && !bad) ? k : 999999 }' "$w/calls-$op" > "$w/ckpt-$op"
	sel=$(select_calls "$w/calls-$op")
	nops=$((nops + 1)) i=0 t0=$(date +%s) r0=$runs
	for N in $sel; do
		modes=once
		[ $((i % 8)) -eq 0 ] || [ "${FAULT_ALL:-0}" = 1 ] && modes="once sticky"
		i=$((i + 1))
		for mode in $modes; do
			trial "$op" "$N" "$mode"
			if [ -z "$problems" ]; then
				ok "$op, $what failing $mode: exit $rc, survived"
			else
				survived=0
				not_ok "$op, $what failing $mode: exit $rc: $problems"
				sed 's/^/#   /' "$w/err" | head -n 5
			fi
		done
	done
	diag "$op: $C calls, $(echo "$sel" | wc -l) of them failed, $((runs - r0)) runs in $(($(date +%s) - t0)) s"
done
[ -n "$ignored" ] && diag "exit 0 after a failure of $ignored (allowed)"
if [ "$survived" -eq 1 ]; then
	diag "$injected failures injected over $nops operations ($runs runs), all survived, database intact"
else
	diag "$injected failures injected over $nops operations ($runs runs), NOT all survived"
fi
done_testing
