#!/bin/sh
# Replay on any machine and any build (masq(1), REPLAY): the numeric
# environment each session records; exact replay where it is the same or
# can be reproduced (another OpenBLAS kernel set, chosen before the library
# loads); tolerance mode where it cannot, which still catches a real
# divergence and names the field; errors, exports and failed starts as they
# were recorded; sessions load reading a dump as data only.
. "$srcdir/lib.sh"
w=$(workdir replay)
py=${PYTHON3:-}
[ -n "$py" ] && [ -x "$py" ] || skip_all "no python3 (it edits dumps and reads the JSON reports here)"
cd "$w" || exit 99
"$MASQ" demo tiny --preset tiny >/dev/null || exit 99
T="--model $w/tiny/model --calib $w/tiny/calib.safetensors"
sql() { "$py" -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); r=c.execute(sys.argv[2]).fetchall(); c.commit(); print('\n'.join('|'.join(map(str,x)) for x in r))" "$@"; }
# jget FILE EXPR: a value of the JSON document in FILE (d is the document)
jget() { "$py" -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }
# status_is N NAME CMD...: CMD exits N (its output in out.txt, err.txt)
status_is() {
	want=$1 name=$2; shift 2
	"$@" > out.txt 2> err.txt; got=$?
	if [ "$got" -eq "$want" ]; then ok "$name"
	else not_ok "$name (exit $got, not $want)"; sed 's/^/#   /' err.txt | head -n 20; fi
}

# ---- the environment record ------------------------------------------------------
check "a recorded run" sh -c "'$MASQ' run $T --method mas-cmc --db a.db --json > run.json 2>/dev/null"
"$MASQ" sessions show 1 --db a.db > show.txt
check "sessions show prints the numeric environment" grep -q '^numeric environment:' show.txt
check "... the BLAS library, its kernel set and threads" grep -q '  BLAS: OpenBLAS .*, kernels .*, 2 threads' show.txt
check "... the compiler and the flags that change floating point" grep -q 'built by .* fast-math=0' show.txt
check "... the CPU and its features, the probe" sh -c "grep -q '  CPU: ' show.txt && grep -q '  probe [0-9a-f]\{16\}' show.txt"
"$MASQ" sessions show 1 --db a.db --json > show.json
check "sessions show --json is one document with the environment and the events" \
	"$py" -c "import json; d=json.load(open('show.json')); assert d['environment']['blas']['threads']==2 and d['events'][0]['name']=='open'"
native=$(jget show.json "d['environment']['blas']['corename']")
diag "native OpenBLAS kernels: $native"

# ---- same environment: exact ----------------------------------------------------------
status_is 0 "replay in the recording's environment: exit 0" "$MASQ" replay --db a.db --json
cp out.txt same.json
check "... in exact mode, every command compared" "$py" -c "import json; d=json.load(open('same.json')); assert d['mode']=='exact' and d['result']=='match' and d['commands']==10, d"

# ---- another kernel set this CPU can run: reproduced, then exact ------------------------
other=Sandybridge
[ "$native" = Sandybridge ] && other=Nehalem
if grep -qw avx /proc/cpuinfo 2>/dev/null; then
	OPENBLAS_CORETYPE=$other "$MASQ" replay --db a.db > repro.out 2> repro.err; rc=$?
	check "under OPENBLAS_CORETYPE=$other the replay reproduces the recorded kernels: exit $rc" test $rc -eq 0
	check "... it says so in one line" grep -q "recorded with OpenBLAS's $native kernels (here: $other); running masq again with OPENBLAS_CORETYPE=$native" repro.err
	check "... and then demands exactness" grep -q "every recorded result matches (exact" repro.out
else
	ok "# SKIP no AVX: no second kernel set to switch to"
fi

# ---- a kernel set that cannot be reproduced: tolerance mode ---------------------------
# record under another kernel set, replay here with --tolerance (no reproduction)
if grep -qw avx /proc/cpuinfo 2>/dev/null; then
	OPENBLAS_CORETYPE=$other "$MASQ" run $T --method mas-cmc --alpha search --alpha-grid 0.3:0.2:0.7 --db k.db >/dev/null 2>&1
	status_is 0 "a session recorded with the $other kernels replays here within tolerances: exit 0" \
		"$MASQ" replay --db k.db --tolerance --json
	cp out.txt tol.json
	check "... the report names the mode and the largest deviation per kind, with its event and path" "$py" -c "
import json; d=json.load(open('tol.json'))
assert d['mode']=='tolerance' and d['result']=='match', d
dev=d['max_deviation']
for k, t in (('statistics', 1e-4), ('quantized', 2e-2), ('sqnr_db', 0.05)):
    assert d['tolerances'][k]==t, (k, d['tolerances'])
    if dev[k] is not None: assert 0 <= dev[k]['value'] <= t and dev[k]['event'] > 0 and dev[k]['path'], dev[k]
# the kernels differ in the last bits: something moved, and it was measured
assert any(dev[k] is not None and dev[k]['value'] > 0 for k in dev), dev
"
	diag "$(jget tol.json "d['max_deviation']")"
else
	ok "# SKIP no AVX: no second kernel set to record with"
fi

# a dump whose environment is another machine's (an ARM server): cannot be reproduced
"$MASQ" sessions dump 1 --db a.db > a1.sql
"$py" - a1.sql arm.sql <<'EOF'
import sys
t = open(sys.argv[1]).read()
import re
t = re.sub(r'"corename":"[A-Za-z0-9_]+"', '"corename":"NEOVERSEN1"', t)
t = re.sub(r'(OpenBLAS [0-9.]+ [A-Z_ ]*?)[A-Za-z0-9]+( MAX_THREADS)', r'\1NEOVERSEN1\2', t)
open(sys.argv[2], 'w').write(t)
EOF
check "the edited dump loads" sh -c "'$MASQ' sessions load arm.sql --db arm.db >/dev/null"
cp -r a.db.blobs arm.db.blobs
status_is 2 "--exact refuses an environment that cannot be reproduced: exit 2" "$MASQ" replay --db arm.db --exact
check "... and says why, naming the kernel sets" grep -q 'blas.corename: recorded NEOVERSEN1, here' err.txt
status_is 0 "without --exact it replays in tolerance mode: exit 0" "$MASQ" replay --db arm.db
check "... and says so, with the differences" sh -c "grep -q 'in tolerance mode: the recorded numeric environment cannot be reproduced here' out.txt && grep -q 'blas.corename: recorded NEOVERSEN1' out.txt"
check "... statistics, plans and checkpoints compared by content (the blobs are there)" sh -c "grep -q 'statistics ' out.txt && ! grep -q 'could not be compared' out.txt"
status_is 2 "--exact and --tolerance together are refused" "$MASQ" replay --db a.db --exact --tolerance

# ---- tolerance mode still catches a real divergence --------------------------------------
# edit KIND DUMP OUT NAME PYEXPR: in the first event of kind KIND and name
# NAME in DUMP, apply PYEXPR to its payload j; write OUT (a dump edited as text)
cat > edit.py <<'EOF'
import json, re, sys
kind, src, dst, name, expr = sys.argv[1:6]
out, done = [], False
for line in open(src).read().split('\n'):
    m = re.match(r"(INSERT INTO events .* VALUES \(\d+, \d+, '(\w+)', '([\w-]+)', ')(.*)(', '[^']*'\);)$", line)
    if m and not done and m.group(2) == kind and m.group(3) == name:
        j = json.loads(m.group(4).replace("''", "'"))
        exec(expr)
        line = m.group(1) + json.dumps(j, sort_keys=True, separators=(',', ':')).replace("'", "''") + m.group(5)
        done = True
    out.append(line)
assert done, 'no such event'
open(dst, 'w').write('\n'.join(out))
EOF
edit() { "$py" edit.py "$@"; }
# load_edited NAME DB: load NAME.sql into a fresh DB with a.db's blobs
load_edited() { rm -rf "$2" "$2.blobs"; "$MASQ" sessions load "$1.sql" --db "$2" >/dev/null && cp -r a.db.blobs "$2.blobs"; }

edit result a1.sql rank.sql quantize-layer "j['linears'][0]['rank'] += 1"
load_edited rank r.db
status_is 1 "tolerance mode: a recorded rank changed in the dump diverges (exit 1)" "$MASQ" replay --db r.db --tolerance
check "... the message names the command, the event and the field, with both values" \
	grep -q '^masq: replay diverged at event [0-9]* (quantize-layer): 1 field differs' err.txt
check "... linears[0].rank: recorded and replayed" sh -c "grep -q '  linears\[0\]\.rank: recorded [0-9]*, replayed [0-9]*' err.txt"

"$MASQ" run $T --method mas --alpha search --alpha-grid 0.3:0.2:0.7 --db a.db >/dev/null 2>&1
"$MASQ" sessions dump 2 --db a.db > a2.sql
edit result a2.sql best.sql search-alpha "j['best']['vision'] = 0.7 if j['best']['vision'] != 0.7 else 0.3"
load_edited best b.db
status_is 1 "tolerance mode: the alpha a search picked, changed, diverges" "$MASQ" replay --db b.db --tolerance --json
check "... --json names the event, the command and the path best.vision with both values" "$py" -c "
import json; d=json.load(open('out.txt'))
assert d['result']=='diverged' and d['divergence']['command']=='search-alpha', d['divergence']
f=[x for x in d['divergence']['fields'] if x['path']=='best.vision']
assert f and f[0]['recorded'] != f[0]['replayed'], d['divergence']
"
"$py" - a1.sql alpha.sql <<'EOF'
import sys
t = open(sys.argv[1]).read()
# the session's own setting: alpha 0.5 -> 0.8 in the settings column
assert '"alpha":0.5,' in t
open(sys.argv[2], 'w').write(t.replace('"alpha":0.5,', '"alpha":0.8,', 1))
EOF
load_edited alpha c.db
status_is 1 "tolerance mode: a recorded alpha changed in the dump diverges" "$MASQ" replay --db c.db --tolerance
check "... at the first figures made with it (the closed-form start of learning), named" \
	grep -q 'replay diverged at event [0-9]* (train-layer).*' err.txt
check "... the start's SQNR is the field named" grep -q 'sqnr_init_db' err.txt

edit result a1.sql small.sql quantize-layer "j['sqnr_db']['text'] += 0.01"
load_edited small d.db
status_is 0 "0.01 dB moved in a recorded SQNR: within tolerance (exit 0)" "$MASQ" replay --db d.db --tolerance
status_is 1 "... but not in exact mode" "$MASQ" replay --db d.db
check "... which names sqnr_db.text with both values, whole" grep -q '  sqnr_db\.text: recorded [0-9.]*, replayed [0-9.]*' err.txt
edit result a1.sql big.sql quantize-layer "j['sqnr_db']['text'] += 1.0"
load_edited big e.db
status_is 1 "1 dB moved: a divergence in tolerance mode too" "$MASQ" replay --db e.db --tolerance

# ---- errors, exports and failed starts as recorded -------------------------------------------
status_is 2 "a refused export (compressed-tensors of a W4 session) is refused" "$MASQ" export --db a.db --session 1 --format compressed-tensors --out ct
check "... and recorded as an error event" test "$(sql a.db "select count(*) from events where session=1 and name='export' and kind='error'")" -eq 1
status_is 0 "the session with the refused export replays: the error met again is a match" "$MASQ" replay --db a.db --session 1
check "... it says so" grep -q '1 recorded error met again' out.txt
status_is 0 "... also with --export DIR" "$MASQ" replay --db a.db --session 1 --export rx

status_is 0 "a first export" "$MASQ" export --db a.db --session 1 --format masquant --out ex/one
status_is 0 "a second export" "$MASQ" export --db a.db --session 1 --format fake --out ex/two
status_is 0 "replay --export DIR of a session with two exports" "$MASQ" replay --db a.db --session 1 --export rx2
check "... writes one subfolder per export, each byte-identical" sh -c "diff -r ex/one rx2/one >/dev/null && diff -r ex/two rx2/two >/dev/null"
check "... and names them" sh -c "grep -q 'written to rx2/one' out.txt && grep -q 'written to rx2/two' out.txt"
status_is 0 "two exports to the same name (one in another directory) replay into distinct subfolders" \
	"$MASQ" export --db a.db --session 1 --format fake --out ex2/two
status_is 0 "... replay" "$MASQ" replay --db a.db --session 1 --export rx3
check "... the second 'two' gets its event number" sh -c "ls rx3 | grep -q '^two-[0-9]*$' && diff -r ex/two rx3/two >/dev/null"

n_before=$(sql a.db "select count(*) from sessions")
status_is 2 "a run that fails before its first layer (a bad --set) exits 2" "$MASQ" run $T --db a.db --set 99.q.alpha=0.3
check "... its session is marked failed" test "$(sql a.db "select status from sessions order by id desc limit 1")" = failed
check "... and is not the default of replay, resume or export" sh -c "'$MASQ' replay --db a.db 2>/dev/null | grep -q 'session 2 replayed'"
failed_id=$(sql a.db "select max(id) from sessions")
status_is 2 "resume refuses the failed session" "$MASQ" resume --db a.db --session "$failed_id"
check "... saying why" grep -q 'failed before its first layer' err.txt
status_is 0 "the failed session replays its error as a match" "$MASQ" replay --db a.db --session "$failed_id"
check "sessions list shows it as failed" sh -c "'$MASQ' sessions list --db a.db | grep -q '^$failed_id .* failed '"
check "(one session row was added)" test "$(sql a.db "select count(*) from sessions")" -eq $((n_before + 1))

# ---- progress reaches a log line by line -------------------------------------------------------
MASQ_DEBUG_KILL_AFTER_EVENT=12 "$MASQ" run $T --db kill.db > kill.out 2> kill.err
check "a run killed at event 12 with output to files: stderr already shows the layer it finished" grep -q 'mas-cmc layer 1/2: SQNR' kill.err

# ---- sessions load reads one session's rows, nothing else ---------------------------------------
cp a.db target.db
counts() { sql target.db "select (select count(*) from sessions) || ' ' || (select count(*) from events)"; }
before=$(counts)
for case in "DROP:DROP TRIGGER events_no_update;" "ATTACH:ATTACH DATABASE 'other.db' AS o;" \
	"PRAGMA:PRAGMA writable_schema = 1;" "CREATE:CREATE TABLE t (x);" "DELETE:DELETE FROM events;" \
	"VACUUM:VACUUM INTO 'copy.db';" "two sessions:INSERT INTO events (session, seq, kind, name, payload, created) VALUES (77, 1, 'note', 'note', '{}', 'x');"; do
	what=${case%%:*} stmt=${case#*:}
	sed "s|^COMMIT;|$stmt\nCOMMIT;|" a1.sql > bad.sql
	status_is 2 "sessions load refuses a dump carrying $what" "$MASQ" sessions load bad.sql --db target.db
	if [ "$what" = "two sessions" ]; then
		check "... naming both sessions" grep -q 'rows of two sessions: its session row is session 1, and 1 of its events belong to session 77' err.txt
	else
		check "... naming the first offending statement" grep -q "statement [0-9]* (line [0-9]*): $what" err.txt
	fi
done
check "the target is unchanged: the same rows" test "$(counts)" = "$before"
check "... and integrity_check is ok" test "$(sql target.db 'pragma integrity_check')" = ok
check "... nothing was attached or copied" sh -c "test ! -e other.db && test ! -e copy.db"
status_is 0 "a plain dump loads" "$MASQ" sessions load a1.sql --db target.db
check "... as a fresh session id" grep -q 'as session [0-9]*$' out.txt
done_testing
