#!/bin/sh
# Sessions: masq run records every command in SQLite; sessions list/show/
# dump/load; replay recomputes and compares (0 match, 1 divergence, 2
# usage); resume after kill -9 reaches the uninterrupted result; bad
# databases are refused and nothing recorded is lost.
. "$srcdir/lib.sh"
w=$(workdir session)
py=${PYTHON3:-}
[ -n "$py" ] && [ -x "$py" ] || skip_all "no python3 (its sqlite3 module edits databases here)"
cd "$w" || exit 99
"$MASQ" demo tiny --preset tiny >/dev/null && "$MASQ" demo other --preset tiny --seed 7 >/dev/null
T="--model $w/tiny/model --calib $w/tiny/calib.safetensors"
sql_fails() { "$py" -c "import sqlite3,sys
c=sqlite3.connect(sys.argv[1])
try:
    c.execute(sys.argv[2]); c.commit()
except sqlite3.DatabaseError:
    sys.exit(0)
sys.exit(1)" "$@"; }
sql() { "$py" -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); r=c.execute(sys.argv[2]).fetchall(); c.commit(); print('\n'.join('|'.join(map(str,x)) for x in r))" "$@"; }

check "run records a session" sh -c "'$MASQ' run $T --method mas-cmc --db a.db --json > run.json"
check "the JSON names the session" "$py" -c "import json; d=json.load(open('run.json')); assert d['session']==1 and d['database']=='a.db'"
check "sessions list shows it" sh -c "'$MASQ' sessions list --db a.db | grep -q '^1 .*finished.*mas-cmc'"
check "sessions show lists its events" sh -c "'$MASQ' sessions show 1 --db a.db | grep -q 'result  quantize-layer'"
n_ev=$(sql a.db "select count(*) from events where session=1")
check "every command has its result ($n_ev events)" test "$(sql a.db "select count(*) from events where session=1 and kind='command'")" -eq \
	"$(sql a.db "select count(*) from events where session=1 and kind='result'")"
check "the database is in WAL mode" test "$(sql a.db 'pragma journal_mode')" = wal
check "the database carries masq's application_id" test "$(sql a.db 'pragma application_id')" = "$(printf '%d' 0x6d617371)"
check "events refuse UPDATE" sql_fails a.db "update events set payload='{}' where seq=1"
check "events refuse DELETE" sql_fails a.db "delete from events"
check "plans and checkpoints are blobs beside the database" sh -c "ls a.db.blobs | grep -qE '^[0-9a-f]{64}$'"

check "replay matches (exit 0)" sh -c "'$MASQ' replay --db a.db --session 1 > replay.out 2>&1"
check "dump + load recreate the session in another database" sh -c "
	'$MASQ' run $T --method rtn --db b.db >/dev/null &&
	'$MASQ' sessions dump 1 --db a.db > s1.sql && '$MASQ' sessions load s1.sql --db b.db >/dev/null &&
	'$MASQ' sessions list --db b.db | grep -q '^2 .*mas-cmc'"
cp -r a.db.blobs b.db.blobs 2>/dev/null
check "the loaded session replays (exit 0)" "$MASQ" replay --db b.db --session 2

# Export a recorded session; eval reproduces it; replay re-exports byte for byte.
check "export a recorded session (masquant)" sh -c "'$MASQ' export --db a.db --session 1 --format masquant --out exp1 > exp1.out"
check "the export is an event of the session" test "$(sql a.db "select count(*) from events where session=1 and name='export' and kind='result'")" -eq 1
check "the export carries its provenance" grep -q '"session": 1' exp1/masq-provenance.json
"$MASQ" eval --model exp1 --reference "$w/tiny/model" --calib "$w/tiny/calib.safetensors" --json > eval.json 2>eval.err
# the compensation is stored in F16 (the default): within what that costs;
# export.sh and masq-workflow(7) check the exact reproduction with F32
check "masq eval reproduces the session's recorded summary (within 0.01 dB: F16 compensation)" "$py" -c "
import json, sqlite3
rec = json.loads(sqlite3.connect('a.db').execute(\"select payload from events where session=1 and name='finish' and kind='result'\").fetchone()[0])
got = json.load(open('eval.json'))['summary']['sqnr_db']
for m in ('text', 'vision', 'audio'):
    assert abs(got[m] - rec['sqnr_db'][m]) <= 0.01, (m, got[m], rec['sqnr_db'][m])
"
before=$(cd exp1 && cksum * | sort)
"$MASQ" export --db a.db --session 1 --format fake --out exp1 > /dev/null 2> ex.err; rc=$?
after=$(cd exp1 && cksum * | sort)
check "an existing export directory is refused, untouched" sh -c "test $rc -eq 2 && grep -q exists ex.err && test -n \"$before\" && test \"$before\" = \"$after\""
check "replay --export re-runs the export into DIR/<its name>: byte-identical files" sh -c "'$MASQ' replay --db a.db --session 1 --export exp2 >/dev/null 2>&1 && diff -r exp1 exp2/exp1 >/dev/null"

# A divergence: drop the trigger in a copy and change one recorded number.
cp a.db c.db && cp -r a.db.blobs c.db.blobs
sql c.db "drop trigger events_no_update" >/dev/null
seq=$(sql c.db "select seq from events where session=1 and kind='result' and name='quantize-layer' order by seq limit 1")
sql c.db "update events set payload=json_set(payload, '\$.sqnr_db.text', 1.5) where session=1 and seq=$seq" >/dev/null
"$MASQ" replay --db c.db --session 1 > div.out 2> div.err; rc=$?
check "a changed result diverges: exit 1" test $rc -eq 1
check "the message names the event, the field and both values" sh -c "grep -q 'replay diverged at event $seq (quantize-layer): 1 field differs' div.err && grep -q '  sqnr_db.text: recorded 1.5, replayed [0-9.]*' div.err"

"$MASQ" replay --db a.db --session 1 --model "$w/other/model" --calib "$w/other/calib.safetensors" > fp.out 2> fp.err; rc=$?
check "another model's fingerprint is refused: exit 2" test $rc -eq 2
check "the message says which file does not match" grep -q 'is not the model session 1 was recorded with' fp.err

# Bad databases: each refused with a message, exit 2, nothing changed.
echo "not a database" > text.db
"$MASQ" sessions list --db text.db > /dev/null 2> e1; rc=$?
check "a text file is refused (exit $rc)" sh -c "test $rc -eq 2 && grep -q 'not an SQLite database' e1"
cp a.db newer.db && sql newer.db "pragma user_version=99" >/dev/null
before=$(cksum < newer.db)
"$MASQ" sessions list --db newer.db > /dev/null 2> e2; rc=$?
check "a newer schema is refused and left alone" sh -c "test $rc -eq 2 && grep -q 'newer masq' e2 && test \"$(cksum < newer.db)\" = \"$before\""
"$py" -c "import sqlite3; c=sqlite3.connect('foreign.db'); c.execute('pragma application_id=42'); c.execute('create table t(x)'); c.commit()"
"$MASQ" sessions list --db foreign.db > /dev/null 2> e3; rc=$?
check "another application's database is refused" sh -c "test $rc -eq 2 && grep -q 'not a masq session database' e3"
head -c 2048 a.db > trunc.db
"$MASQ" sessions list --db trunc.db > /dev/null 2> e4; rc=$?
check "a truncated database is refused (exit $rc)" sh -c "test $rc -eq 2 && test -s e4"
cp a.db unk.db && cp -r a.db.blobs unk.db.blobs
sql unk.db "insert into events(session,seq,kind,name,payload,created) values(1,(select max(seq)+1 from events where session=1),'command','frobnicate','{}','2026-01-01T00:00:00Z')" >/dev/null
"$MASQ" replay --db unk.db --session 1 > /dev/null 2> e5; rc=$?
check "an unknown command in an event is refused (exit $rc)" sh -c "test $rc -eq 2 && grep -q \"unknown command 'frobnicate'\" e5"
"$MASQ" replay --db nope.db 2>/dev/null; rc=$?
check "a missing database is an error for replay (exit 2), and is not created" sh -c "test $rc -eq 2 && test ! -e nope.db"

# kill -9 in the middle of a run loses at most the layer in progress.  The
# kill points are events of the run (the test hook MASQ_DEBUG_KILL_AFTER_EVENT
# kills the process right after that event is durable), so the test does not
# depend on how fast the machine is: an odd event is a command whose result
# never came (killed in the middle of its work), an even one falls between
# two commands.
"$MASQ" demo small --preset small >/dev/null
S="--model $w/small/model --calib $w/small/calib.safetensors"
"$MASQ" run $S --method mas-cmc --epochs 0 --alpha search --alpha-grid 0.3:0.2:0.7 --db whole.db --json > whole.json 2>/dev/null
n_whole=$(sql whole.db "select count(*) from events")
i=0
for seed in 1 2 3; do
	i=$((i + 1))
	# a point in the run, spread over its events, odd or even by the seed
	at=$(awk -v n="$n_whole" -v s="$seed" -v p="$$" 'BEGIN { srand(p * 7 + s); k = int(2 + rand() * (n - 4)); if (s == 2 && k % 2 == 0) k++; print k }')
	MASQ_DEBUG_KILL_AFTER_EVENT=$at "$MASQ" run $S --method mas-cmc --epochs 0 --alpha search --alpha-grid 0.3:0.2:0.7 --db k$i.db > /dev/null 2>&1
	rc=$?
	ic=missing
	[ -s k$i.db ] && ic=$(sql k$i.db 'pragma integrity_check')
	check "killed after event $at of $n_whole (exit $rc): the database exists and integrity_check is ok" test "$ic" = ok
	check "the kill interrupted the run at that event (no finish recorded, $at events)" \
		test "$(sql k$i.db "select count(*) from events where name='finish'")" -eq 0 -a "$(sql k$i.db "select count(*) from events")" -eq "$at"
	"$MASQ" resume --db k$i.db > resume$i.out 2>&1
	check "resume continues and finishes the run" sh -c "grep -q 'resuming session' resume$i.out && grep -q '^session .* finished' resume$i.out"
	a=$(sql whole.db "select payload from events where name='finish' and kind='result'")
	b=$(sql k$i.db "select payload from events where name='finish' and kind='result'")
	check "resumed summary equals the uninterrupted run's" test -n "$a" -a "$a" = "$b"
	check "the resumed session replays (exit 0)" sh -c "'$MASQ' replay --db k$i.db >/dev/null 2>&1"
done

# kill -9 while a layer learns (mas-cmc, which learns on its own chain
# beside the deployed one): the layer in progress is lost and learned
# again, the result is the uninterrupted run's, bit for bit
"$MASQ" demo tinyk --preset tiny >/dev/null
K="--model $w/tinyk/model --calib $w/tinyk/calib.safetensors"
"$MASQ" run $K --method mas-cmc --db lw.db > /dev/null 2>&1
for which in 0 1; do
	# the command event of layer $which's train-layer: killed in the middle of its work
	at=$(sql lw.db "select seq from events where name='train-layer' and kind='command' order by seq limit 1 offset $which")
	MASQ_DEBUG_KILL_AFTER_EVENT=$at "$MASQ" run $K --method mas-cmc --db lk$which.db > /dev/null 2>&1
	check "killed while layer $which learns (after event $at): no result of that training recorded" \
		test "$(sql lk$which.db "select count(*) from events where name='train-layer' and kind='result'")" -eq "$which"
	"$MASQ" resume --db lk$which.db > lresume$which.out 2>&1
	check "... resume learns the layer again and finishes" grep -q '^session .* finished' lresume$which.out
	a=$(sql lw.db "select payload from events where name='finish' and kind='result'")
	b=$(sql lk$which.db "select payload from events where name='finish' and kind='result'")
	check "... its summary equals the uninterrupted run's" test -n "$a" -a "$a" = "$b"
	a=$(sql lw.db "select payload from events where name='train-layer' and kind='result' order by seq")
	b=$(sql lk$which.db "select payload from events where name='train-layer' and kind='result' order by seq")
	check "... and so does every layer's learning (losses, factors)" test -n "$a" -a "$a" = "$b"
	check "... the resumed session replays (exit 0)" sh -c "'$MASQ' replay --db lk$which.db >/dev/null 2>&1"
done
# Disk: a session keeps its latest checkpoint only; gc removes what no
# session needs; replay and export do not depend on what was removed.
rm -rf gc.db gc.db.blobs gc.db-wal gc.db-shm
"$MASQ" run $T --method sq --db gc.db > /dev/null 2>&1
ck=$(sql gc.db "select count(distinct json_extract(payload, '\$.checkpoint')) from events where name = 'next-layer' and kind = 'result'")
kept=$(for c in $(sql gc.db "select json_extract(payload, '\$.checkpoint') from events where name = 'next-layer' and kind = 'result'"); do
	test -f gc.db.blobs/$c && echo $c; done | wc -l)
check "of the session's $ck checkpoints only the latest is kept beside the database" test "$ck" -ge 2 -a "$kept" -eq 1
MASQ_KEEP_CHECKPOINTS=1 "$MASQ" run $T --method rtn --db gc.db > /dev/null 2>&1
check "MASQ_KEEP_CHECKPOINTS=1 keeps every one" sh -c "
	for c in \$(sqlite3 gc.db \"select json_extract(payload, '\\\$.checkpoint') from events where session = 2 and name = 'next-layer' and kind = 'result'\"); do
		test -f gc.db.blobs/\$c || exit 1; done"
check "sessions gc --dry-run counts the superseded ones and removes nothing" sh -c "
	n=\$(ls gc.db.blobs | wc -l) && '$MASQ' sessions gc --db gc.db --dry-run --json | grep -q '\"removed\": 1,' &&
	test \$(ls gc.db.blobs | wc -l) -eq \$n"
check "sessions gc removes them" sh -c "'$MASQ' sessions gc --db gc.db | grep -q '^removed 1 blob'"
check "... and both sessions still replay exactly, export, and resume says they are finished" sh -c "
	'$MASQ' replay --db gc.db --session 1 > /dev/null 2>&1 && '$MASQ' replay --db gc.db --session 2 > /dev/null 2>&1 &&
	'$MASQ' export --db gc.db --session 2 --format fake --out gc-export > /dev/null &&
	'$MASQ' resume --db gc.db --session 1 2>&1 | grep -q 'already finished'"
# A session another masq version recorded: its export is not compared (the
# formats changed), everything else is.
rm -rf old.db old.db.blobs old.db-wal old.db-shm && cp a.db old.db && cp -r a.db.blobs old.db.blobs
sql old.db "update sessions set masq_version = '0.1.0' where id = 1" >/dev/null
check "a session of masq 0.1.0 replays, its export counted as not compared" sh -c "
	'$MASQ' replay --db old.db --session 1 > old.out 2>&1 && grep -q '1 export of masq 0.1.0 not compared' old.out"

# A run whose session cannot be marked finished (a full disk did it in
# tests/faults.sh; a trigger here) fails, rather than exit 0 over a session
# that still reads "open"; resume then finishes it.
"$MASQ" run $T --method rtn --db st.db >/dev/null 2>&1
sql st.db "create trigger no_finish before update of status on sessions when new.status = 'finished'
	begin select raise(abort, 'no status now'); end"
"$MASQ" run $T --method rtn --db st.db >/dev/null 2>st.err
rc=$?
check "a run whose session cannot be marked finished fails (exit $rc)" \
	sh -c "test $rc -eq 2 && grep -q \"cannot set the session's status: no status now\" st.err"
check "... its session reads open" test "$(sql st.db 'select status from sessions where id = 2')" = open
sql st.db "drop trigger no_finish"
"$MASQ" resume --db st.db --session 2 >/dev/null 2>&1
check "... and resume finishes it" test "$(sql st.db 'select status from sessions where id = 2')" = finished
done_testing
