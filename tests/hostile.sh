#!/bin/sh
# hostile.sh: a session database is input too.  The reproducers of issue
# 15, each made from a real masq.db: edited below SQLite (one byte of an
# event's payload, a cursor moved out of range or below zero, a payload
# that is no longer JSON), and a database whose schema lacks masq's NOT
# NULL constraints, with NULL columns.  Each is refused with exit 2 and a
# message naming the session, the event and the field; nothing crashes or
# hangs, and the database is left as it was.
. "$srcdir/lib.sh"
w=$(workdir hostile)
py=${PYTHON3:-}
[ -n "$py" ] && [ -x "$py" ] || skip_all "no python3"
command -v sqlite3 >/dev/null || skip_all "no sqlite3"
cd "$w" || exit 1

"$MASQ" demo d --preset tiny >/dev/null
"$MASQ" run --model d/model --calib d/calib.safetensors --method sq --db a.db >/dev/null 2>&1
check "a recorded session to edit" test -s a.db

# edit NAME FROM TO: a copy of a.db (and its blobs) as NAME.db with the
# first occurrence of the bytes FROM replaced by TO (same length), below SQLite.
edit() {
	rm -rf "$1.db" "$1.db.blobs"; cp a.db "$1.db"; cp -r a.db.blobs "$1.db.blobs"
	"$py" - "$1.db" "$2" "$3" <<'EOF'
import sys
p, a, b = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
assert len(a) == len(b)
d = open(p, "rb").read(); i = d.find(a); assert i >= 0, a
open(p, "wb").write(d[:i] + b + d[i + len(a):])
EOF
}
# refused NAME DB NEEDLE [REPLAY_STATUS]: resume, export and replay of DB
# exit 2 (replay: REPLAY_STATUS, 1 when it diverges) with NEEDLE, and what
# DB holds does not change (its rows, as sqlite3 dumps them).
refused() {
	before=$(sqlite3 "$2" .dump | cksum)
	bad=
	for c in "resume --db $2" "export --db $2 --format fake --out $w/x-$1" "replay --db $2"; do
		want=2
		case $c in replay*) want=${4:-2} ;; esac
		timeout 120 "$MASQ" $c >/dev/null 2>"$w/err"; rc=$?
		{ [ "$rc" -eq "$want" ] && grep -q -- "$3" "$w/err"; } || bad="$bad; $c: exit $rc: $(head -c 200 "$w/err")"
	done
	[ "$(sqlite3 "$2" .dump | cksum)" = "$before" ] || bad="$bad; the database changed"
	[ ! -e "$w/x-$1" ] || bad="$bad; an export was written"
	check "$1: resume, export and replay refuse it ($3), the database untouched" test -z "$bad"
	[ -z "$bad" ] || diag "$bad"
}

ck=$(sqlite3 a.db "select json_extract(payload, '$.checkpoint') from events where name = 'next-layer' and kind = 'result' limit 1")
edit cursor9 '"layer":2}' '"layer":9}'
check "cursor9: quick_check passes (the edit is below SQLite's notice)" sh -c "test \"\$(sqlite3 cursor9.db 'pragma quick_check')\" = ok"
timeout 60 "$MASQ" resume --db cursor9.db >/dev/null 2>err.txt; rc=$?
check "cursor9: a next-layer result that moves the cursor past the model is refused, naming the event" \
	sh -c "test $rc -eq 2 && grep -q 'event 14 (next-layer): its result moves the cursor from layer 1 to 9' err.txt"
edit cursorneg "\"checkpoint\":\"$ck\",\"layer\":1}" "\"checkpoint\":\"${ck%?}\",\"layer\":-1}"
refused cursorneg cursorneg.db "event 8 (next-layer)" 1
edit badjson '{"layer":1}' '{"layer":1]'
refused badjson badjson.db "database is damaged"

# a schema without masq's NOT NULL constraints, rows with NULL columns
sqlite3 a.db .schema | sed 's/ NOT NULL//g; s/ CHECK (json_valid(payload))//; s/ CHECK (json_valid(settings))//' > weak.sql
mk_weak() {
	rm -rf "$1.db" "$1.db-wal" "$1.db-shm" "$1.db.blobs"
	sqlite3 "$1.db" < weak.sql
	sqlite3 "$1.db" "pragma application_id = $(sqlite3 a.db 'pragma application_id');
		pragma user_version = $(sqlite3 a.db 'pragma user_version');
		attach 'a.db' as a; insert into sessions select * from a.sessions; insert into events select * from a.events;
		drop trigger events_no_update; $2"
	cp -r a.db.blobs "$1.db.blobs"
}
mk_weak nullfp "update sessions set model_fp = NULL"
refused nullfp nullfp.db "session 1: column model_fp is NULL"
mk_weak nullpay "update events set payload = NULL where seq = 5"
refused nullpay nullpay.db "session 1, event 5: column payload is NULL"
mk_weak nullname "update events set name = NULL where seq = 7"
refused nullname nullname.db "event 7: column name is NULL"
for v in nullfp nullpay; do
	timeout 60 "$MASQ" sessions show 1 --db $v.db >/dev/null 2>err.txt; rc=$?
	check "$v: sessions show refuses it too (exit 2)" test $rc -eq 2
done
mk_weak badsetting "update sessions set settings = json_set(settings, '$.sample_cap', -1)"
refused badsetting badsetting.db "session 1: its settings: the token sample must hold 1 to"
check "and the original database still replays exactly" "$MASQ" replay --db a.db
done_testing
