#!/bin/sh
# masq run and masq resume under mpirun (configure --with-mpi): 1, 2 and 3
# processes (oversubscribed on a 2-core machine) against one process on the
# tiny demo, closed form, learned and with allocated ranks, by what each
# records: the --json report, the database's events, the statistics and the
# last checkpoint (tests/mpi_run_check.py); the session replays in one
# process; killed runs resume with the same or another number of processes;
# a rank that cannot begin, or reads other files, stops the run with a
# message naming it.  Skipped, with the reason, in a build without
# MPI or without mpirun.
. "$srcdir/lib.sh"
w=$(workdir mpi_run)
py=${PYTHON3:-/usr/bin/python3}
mpi_setup

"$MASQ" demo "$w/d" --preset tiny >/dev/null || { not_ok "masq demo"; done_testing; exit; }
"$MASQ" demo "$w/e" --preset tiny --seed 7 >/dev/null || { not_ok "masq demo --seed 7"; done_testing; exit; }
M="--model $w/d/model --calib $w/d/calib.safetensors --threads 1 --epochs 0"
# the closed form with every token-dependent step: the alpha search, a
# held-out split, compensation and the text KL at the end
R="--alpha search --eval-split 0.25"

# Tolerances.  Every linear runs one GEMM a sequence, so a rank's share of
# the FP chain, and so every maximum, factor and decision, is one process's
# bits; what several processes sum (statistics, metrics, the KL) is taken in
# another association: mas, without compensation, is held to 1e-12 relative
# (measured 1e-15).  Compensation's factors come from Gram matrices summed
# so: a last place of L1 or L2 moves a vision or audio row of the quantized
# chain, which can carry an activation of a later linear across a rounding
# boundary of its 8-bit grid; measured 3e-5 relative (1.3e-3 dB of an
# uncompensated variant's 22.5 dB), the rest within 1e-6.  2e-4 for mas-cmc
# (under 0.01 dB; replay's own tolerance is 0.05 dB).
tol=2e-4 tol_exact=1e-12
"$MASQ" run $M $R --db "$w/one.db" --json >"$w/one.json" 2>"$w/one.err"
check "one process: masq run exits 0" test $? -eq 0
for np in 1 2 3; do
	run_np "$np" "$MASQ" run $M $R --db "$w/np$np.db" --json >"$w/np$np.json" 2>"$w/np$np.err"
	rc=$?
	check "mpirun -np $np masq run exits 0 ($rc)" test "$rc" -eq 0
	[ "$rc" -eq 0 ] || sed 's/^/#   /' "$w/np$np.err"
	if [ "$rc" -eq 0 ]; then
		tap_run "np $np against one process" "$w/np$np.tap" "$py" "$srcdir/mpi_run_check.py" \
		    "$w/one.json" "$w/one.db" "$w/np$np.json" "$w/np$np.db" "$np" "$tol"
	fi
done
# mas, without compensation: everything to the sums' association, and the
# exports byte for byte
"$MASQ" run $M $R --method mas --db "$w/mas1.db" --json >"$w/mas1.json" 2>/dev/null
for np in 2 3; do
	run_np "$np" "$MASQ" run $M $R --method mas --db "$w/mas$np.db" --json >"$w/mas$np.json" 2>"$w/mas$np.err"
	check "mpirun -np $np masq run --method mas exits 0" test $? -eq 0
	tap_run "mas, np $np against one process" "$w/mas$np.tap" "$py" "$srcdir/mpi_run_check.py" \
	    "$w/mas1.json" "$w/mas1.db" "$w/mas$np.json" "$w/mas$np.db" "$np" "$tol_exact"
done
# (an export is recorded in its session: after the comparisons)
for np in 1 2 3; do
	"$MASQ" export --db "$w/mas$np.db" --format fake --out "$w/mas$np.exp" >/dev/null 2>&1
done
for np in 2 3; do
	check "mas, np $np: the fake-quantized export is one process's, byte for byte" \
	    sh -c "cd '$w' && ls mas1.exp/*.safetensors >/dev/null && for f in \$(cd mas1.exp && ls *.safetensors); do cmp -s mas1.exp/\$f mas$np.exp/\$f || exit 1; done"
done
check "mpirun -np 3: rank 0 alone reports (one JSON document)" "$py" -c "import json,sys; json.load(open(sys.argv[1]))" "$w/np3.json"
check "... and one progress line a layer" sh -c "test \$(grep -c 'layer 1/2' '$w/np3.err') -eq 1"
check "... and nothing but the database and its blobs beside it" sh -c \
    "test \$(ls '$w' | grep -c '^np3\\.db') -eq 2 && ! ls '$w'/np3.db.blobs/.tmp* >/dev/null 2>&1"

# every method, in two processes
"$MASQ" run $M --method all --db "$w/all1.db" --json >"$w/all1.json" 2>/dev/null
run_np 2 "$MASQ" run $M --method all --db "$w/all2.db" --json >"$w/all2.json" 2>"$w/all2.err"
check "mpirun -np 2 masq run --method all: exit 0" test $? -eq 0
tap_run "every method, np 2 against one process" "$w/all2.tap" "$py" "$srcdir/mpi_run_check.py" \
    "$w/all1.json" "$w/all1.db" "$w/all2.json" "$w/all2.db" 2 "$tol"

# the session three processes recorded is a session like any: it replays in
# one process (within tolerance: the process count is part of the numeric
# environment) and exports
"$MASQ" replay --db "$w/np3.db" >"$w/replay.out" 2>&1
rc=$?
check "masq replay of the 3-process session in one process: exit 0 ($rc)" test "$rc" -eq 0
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$w/replay.out"
check "... in tolerance, naming the process count" grep -q "processes: recorded 3, here (not recorded)" "$w/replay.out"
"$MASQ" export --db "$w/np3.db" --format fake --out "$w/exp" >"$w/exp.out" 2>&1
check "masq export of the 3-process session: exit 0" test $? -eq 0

# a run under mpirun killed after its first layer resumes in one process
# from the checkpoint rank 0 wrote, to one process's figures (2e-4)
MASQ_DEBUG_KILL_AFTER_EVENT=12 run_np 2 -x MASQ_DEBUG_KILL_AFTER_EVENT "$MASQ" run $M --db "$w/kill.db" \
    >/dev/null 2>&1
check "a 2-process run killed at event 12 is left open" \
    sh -c "test \"\$(sqlite3 '$w/kill.db' 'select status from sessions')\" = open"
"$MASQ" resume --db "$w/kill.db" >"$w/resume.out" 2>&1
rc=$?
check "masq resume continues it in one process: exit 0 ($rc)" test "$rc" -eq 0
"$MASQ" run $M --db "$w/whole.db" --json >"$w/whole.json" 2>/dev/null
check "... to the figures of an uninterrupted run" "$py" -c "
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
got = json.loads(c.execute(\"select payload from events where kind='result' and name='finish'\").fetchone()[0])['sqnr_db']
want = json.load(open(sys.argv[2]))['summary']['sqnr_db']
assert all(abs(got[k] - want[k]) <= float(sys.argv[3]) * abs(want[k]) for k in want), (got, want)
" "$w/kill.db" "$w/whole.json" "$tol"

# masq resume under mpirun: rank 0 reads the events and the checkpoint and
# sends each rank its share of it, with as many processes as recorded
# (then to the uninterrupted run's bits), or another number (then within
# the sums' tolerance, the session's environment saying so)
kill_run() {	# NP DB: a run killed after its first layer's commit
	if [ "$1" -eq 1 ]; then
		MASQ_DEBUG_KILL_AFTER_EVENT=12 "$MASQ" run $M --db "$2" >/dev/null 2>&1
	else
		MASQ_DEBUG_KILL_AFTER_EVENT=12 run_np "$1" -x MASQ_DEBUG_KILL_AFTER_EVENT "$MASQ" run $M --db "$2" \
		    >/dev/null 2>&1
	fi
	test "$(sqlite3 "$2" 'select status from sessions')" = open
}
finish_of() { sqlite3 "$1" "select payload from events where kind='result' and name='finish'"; }
run_np 2 "$MASQ" run $M --db "$w/whole2.db" >/dev/null 2>&1
check "a 2-process run killed at event 12 (again) is left open" kill_run 2 "$w/k22.db"
run_np 2 "$MASQ" resume --db "$w/k22.db" >"$w/k22.out" 2>"$w/k22.err"
rc=$?
check "mpirun -np 2 masq resume of it: exit 0 ($rc)" test "$rc" -eq 0
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$w/k22.err"
check "... says where it resumes, once" sh -c "test \$(grep -c 'resuming session 1 at layer 1 of 2' '$w/k22.err') -eq 1"
check "... and reports once" sh -c "test \$(grep -c '^session 1 finished' '$w/k22.out') -eq 1"
check "... its finish is the uninterrupted 2-process run's, bit for bit" \
    sh -c "test -n \"\$(sqlite3 '$w/k22.db' \"select payload from events where kind='result' and name='finish'\")\" &&
	test \"\$(sqlite3 '$w/k22.db' \"select payload from events where kind='result' and name='finish'\")\" = \
	     \"\$(sqlite3 '$w/whole2.db' \"select payload from events where kind='result' and name='finish'\")\""
check "... and its environment records no resume elsewhere" \
    sh -c "! sqlite3 '$w/k22.db' 'select environment from sessions' | grep -q resumed"
# (the kill came after layer 1's quantize-layer: resume quantizes layer 1
# again, as the uninterrupted run did from its event 9)
sqlite3 "$w/k22.db" "select kind, name, payload from events where seq > 12" >"$w/k22.ev"
sqlite3 "$w/whole2.db" "select kind, name, payload from events where seq > 8" >"$w/whole2.ev"
check "... every event after the resume is the uninterrupted run's from layer 1 on" \
    sh -c "test -s '$w/k22.ev' && sed 's/\"seconds\":[0-9.e+-]*//g' '$w/k22.ev' >'$w/k22.evs' &&
	sed 's/\"seconds\":[0-9.e+-]*//g' '$w/whole2.ev' >'$w/whole2.evs' &&
	cmp -s '$w/k22.evs' '$w/whole2.evs'"
for pair in "2 3" "1 2" "3 1"; do
	set -- $pair
	db="$w/k$1$2.db"
	check "a $1-process run killed at event 12 is left open" kill_run "$1" "$db"
	if [ "$2" -eq 1 ]; then
		"$MASQ" resume --db "$db" >"$db.out" 2>"$db.err"
	else
		run_np "$2" "$MASQ" resume --db "$db" >"$db.out" 2>"$db.err"
	fi
	rc=$?
	check "... resumed in $2 process(es): exit 0 ($rc)" test "$rc" -eq 0
	[ "$rc" -eq 0 ] || sed 's/^/#   /' "$db.err"
	check "... warns that its later layers come from another environment" \
	    grep -q "was recorded in another numeric environment (.*processes: recorded .*here .*): layers from 1 on" "$db.err"
	check "... to the figures of an uninterrupted run ($tol)" "$py" -c "
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
got = json.loads(c.execute(\"select payload from events where kind='result' and name='finish'\").fetchone()[0])['sqnr_db']
want = json.load(open(sys.argv[2]))['summary']['sqnr_db']
assert all(abs(got[k] - want[k]) <= float(sys.argv[3]) * abs(want[k]) for k in want), (got, want)
" "$db" "$w/whole.json" "$tol"
	check "... its environment records the resume" "$py" -c "
import json, sqlite3, sys
env = json.loads(sqlite3.connect(sys.argv[1]).execute('select environment from sessions').fetchone()[0])
r = env['resumed']
assert len(r) == 1 and r[0]['layer'] == 1 and any(d.startswith('processes: ') for d in r[0]['differs']), r
" "$db"
	"$MASQ" replay --db "$db" >"$db.replay" 2>&1
	rc=$?
	check "... it replays in one process in tolerance mode, naming the resume ($rc)" \
	    sh -c "test $rc -eq 0 && grep -q 'resumed at layer 1 in another numeric environment' '$db.replay'"
done
# a rank that dies in the middle of a layer (SIGKILL as it begins layer 1's
# first command): mpirun names it and ends the others, rank 0 says where
# the run stood and how to go on, and the session resumes to the
# uninterrupted run's bits
run_np 2 sh -c 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then export MASQ_DEBUG_KILL_AT_LAYER=1; fi
	exec "$0" "$@"' "$MASQ" run $M --db "$w/die.db" >/dev/null 2>"$w/die.err"
rc=$?
check "rank 1 killed in layer 1: the run fails ($rc), not a hang" sh -c "test $rc -ne 0 && test $rc -ne 124"
check "... mpirun names rank 1" grep -q "rank 1 .*exited on signal 9" "$w/die.err"
check "... rank 0 names the layer and the resume, once" \
    sh -c "test \$(grep -c \"masq: terminated in layer 1 of 2 of session 1 .*masq resume --db $w/die.db --session 1\" '$w/die.err') -eq 1"
check "... the session is left open" sh -c "test \"\$(sqlite3 '$w/die.db' 'select status from sessions')\" = open"
run_np 2 "$MASQ" resume --db "$w/die.db" >/dev/null 2>"$w/die-resume.err"
check "... mpirun -np 2 masq resume finishes it: exit 0" test $? -eq 0
check "... to the uninterrupted 2-process run's finish, bit for bit" \
    sh -c "test -n \"\$(sqlite3 '$w/die.db' \"select payload from events where kind='result' and name='finish'\")\" &&
	test \"\$(sqlite3 '$w/die.db' \"select payload from events where kind='result' and name='finish'\")\" = \
	     \"\$(sqlite3 '$w/whole2.db' \"select payload from events where kind='result' and name='finish'\")\""

# what resume cannot do under mpirun stops every rank with one message, and
# the session stays as it was, to resume another way
cp "$w/k22.db" "$w/fin.db" && cp -r "$w/k22.db.blobs" "$w/fin.db.blobs"
run_np 2 "$MASQ" resume --db "$w/fin.db" >/dev/null 2>"$w/fin.err"
check "mpirun -np 2 masq resume of a finished session: exit 0, said once" \
    sh -c "test $? -eq 0 && test \$(grep -c 'has already finished' '$w/fin.err') -eq 1"
run_np 2 "$MASQ" resume --db "$w/nowhere.db" >/dev/null 2>"$w/nowhere.err"
rc=$?
check "mpirun -np 2 masq resume of a missing database: non-zero ($rc), one message" \
    sh -c "test $rc -ne 0 && test \$(grep -c '^masq: ' '$w/nowhere.err') -eq 1"
check "... and nothing written in its place" test ! -e "$w/nowhere.db"
check "a 2-process run killed at event 12 (a third) is left open" kill_run 2 "$w/k25.db"
run_np 5 "$MASQ" resume --db "$w/k25.db" >/dev/null 2>"$w/k25.err"
rc=$?
check "mpirun -np 5 masq resume with 4 sequences: exit 2 ($rc), one message" \
    sh -c "test $rc -eq 2 && test \$(grep -c '^masq: ' '$w/k25.err') -eq 1 && grep -q '5 processes for 4 calibration sequences' '$w/k25.err'"
run_np 2 sh -c 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then c=$2; else c=$1; fi
	exec "$0" resume --db "$3" --model "$4" --calib "$c"' "$MASQ" "$w/d/calib.safetensors" \
    "$w/e/calib.safetensors" "$w/k25.db" "$w/d/model" >/dev/null 2>"$w/k25o.err"
rc=$?
check "mpirun -np 2 masq resume, rank 1 given another calibration set: exit 2 ($rc), naming rank 1 once" \
    sh -c "test $rc -eq 2 && test \$(grep -c '^masq: rank 1 of 2: ' '$w/k25o.err') -eq 1 && grep -q 'is not the calibration set session' '$w/k25o.err'"
check "... the session is still open, with the events it had" \
    sh -c "test \"\$(sqlite3 '$w/k25.db' 'select status, count(*) from sessions, events')\" = 'open|12'"
run_np 2 "$MASQ" resume --db "$w/k25.db" >/dev/null 2>&1
check "... and resumes in 2 processes after all" test $? -eq 0

# learned factors (the default: 2 epochs): each step is its sequence's
# rank's, which sends the gradients, and every rank takes the same AdamW
# step, so every loss and every learned factor is one process's bits; the
# rest as above (mas-cmc 2e-4; mas 1e-12, its export byte for byte)
L="--model $w/d/model --calib $w/d/calib.safetensors --threads 1"
"$MASQ" run $L --db "$w/learn1.db" --json >"$w/learn1.json" 2>/dev/null
"$MASQ" run $L --method mas --db "$w/lmas1.db" --json >"$w/lmas1.json" 2>/dev/null
same_learning() {	# DB1 DB2: every train-layer's losses and factors the same bits
	"$py" -c "
import json, sqlite3, sys
def tr(db):
    q = \"select payload from events where kind='result' and name='train-layer' order by seq\"
    return [json.loads(p) for (p,) in sqlite3.connect(db).execute(q)]
a, b = tr(sys.argv[1]), tr(sys.argv[2])
keys = ('layer', 'steps', 'skipped', 'losses', 'factors', 'factors_sha256')
assert len(a) == 2 and len(a) == len(b), (len(a), len(b))
for x, y in zip(a, b):
    for k in keys:
        assert x[k] == y[k], (x['layer'], k, str(x[k])[:80], str(y[k])[:80])
" "$1" "$2"
}
for np in 2 3; do
	run_np "$np" "$MASQ" run $L --db "$w/learn$np.db" --json >"$w/learn$np.json" 2>"$w/learn$np.err"
	rc=$?
	check "mpirun -np $np masq run, learned factors: exit 0 ($rc)" test "$rc" -eq 0
	[ "$rc" -eq 0 ] || sed 's/^/#   /' "$w/learn$np.err"
	check "... every loss and learned factor is one process's bits" same_learning "$w/learn1.db" "$w/learn$np.db"
	tap_run "learned, np $np against one process" "$w/learn$np.tap" "$py" "$srcdir/mpi_run_check.py" \
	    "$w/learn1.json" "$w/learn1.db" "$w/learn$np.json" "$w/learn$np.db" "$np" "$tol"
	run_np "$np" "$MASQ" run $L --method mas --db "$w/lmas$np.db" --json >"$w/lmas$np.json" 2>/dev/null
	check "mpirun -np $np masq run --method mas, learned: every loss and factor one process's" \
	    same_learning "$w/lmas1.db" "$w/lmas$np.db"
	tap_run "learned mas, np $np against one process" "$w/lmas$np.tap" "$py" "$srcdir/mpi_run_check.py" \
	    "$w/lmas1.json" "$w/lmas1.db" "$w/lmas$np.json" "$w/lmas$np.db" "$np" "$tol_exact"
done
for np in 1 3; do
	"$MASQ" export --db "$w/lmas$np.db" --format fake --out "$w/lmas$np.exp" >/dev/null 2>&1
done
check "learned mas, np 3: the fake-quantized export is one process's, byte for byte" \
    sh -c "cd '$w' && ls lmas1.exp/*.safetensors >/dev/null && for f in \$(cd lmas1.exp && ls *.safetensors); do cmp -s lmas1.exp/\$f lmas3.exp/\$f || exit 1; done"
# a learned run killed after its first layer resumes in another number of
# processes from the four chains of its checkpoint, its learning the same
MASQ_DEBUG_KILL_AFTER_EVENT=12 run_np 2 -x MASQ_DEBUG_KILL_AFTER_EVENT "$MASQ" run $L --db "$w/lk.db" >/dev/null 2>&1
check "a learned 2-process run killed at event 12 is left open" \
    sh -c "test \"\$(sqlite3 '$w/lk.db' 'select status from sessions')\" = open"
run_np 3 "$MASQ" resume --db "$w/lk.db" >/dev/null 2>"$w/lk.err"
rc=$?
check "... resumed in 3 processes: exit 0 ($rc)" test "$rc" -eq 0
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$w/lk.err"
check "... every loss and learned factor is one process's bits" same_learning "$w/learn1.db" "$w/lk.db"

# ranks allocated to a byte budget or an error target: every rank computes
# every spectrum from the reduced statistics, so the allocated ranks (the
# integers of the --json report) are one process's, the figures within tol
for opt in "--rank-budget 150kB" "--rank-target -28"; do
	tag=$(echo "$opt" | tr -dc 'a-z')
	"$MASQ" run $M $opt --db "$w/${tag}1.db" --json >"$w/${tag}1.json" 2>/dev/null
	for np in 2 3; do
		run_np "$np" "$MASQ" run $M $opt --db "$w/$tag$np.db" --json >"$w/$tag$np.json" 2>"$w/$tag$np.err"
		rc=$?
		check "mpirun -np $np masq run $opt: exit 0 ($rc)" test "$rc" -eq 0
		[ "$rc" -eq 0 ] || sed 's/^/#   /' "$w/$tag$np.err"
		tap_run "$opt, np $np against one process" "$w/$tag$np.tap" "$py" "$srcdir/mpi_run_check.py" \
		    "$w/${tag}1.json" "$w/${tag}1.db" "$w/$tag$np.json" "$w/$tag$np.db" "$np" "$tol"
		check "... the allocated ranks are one process's" "$py" -c "
import json, sqlite3, sys
q = \"select payload from events where kind='result' and name='allocate-ranks'\"
a, b = (json.loads(sqlite3.connect(d).execute(q).fetchone()[0]) for d in sys.argv[1:3])
assert len(a['ranks']) > 0 and a['ranks'] == b['ranks'] and a['bytes'] == b['bytes'], (a['ranks'], b['ranks'])
" "$w/${tag}1.db" "$w/$tag$np.db"
	done
done

# a process in another numeric environment (another kernel set, as on a
# node with another CPU): the run goes on, rank 0 says which rank differs
# in what, and records it, so that replay compares within tolerances
run_np 2 sh -c 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then export OPENBLAS_CORETYPE=Sandybridge; fi
	exec "$0" "$@"' "$MASQ" run $M --db "$w/het.db" >/dev/null 2>"$w/het.err"
rc=$?
check "rank 1 on other kernels: the run finishes (exit $rc)" test "$rc" -eq 0
check "... rank 0 names rank 1 and the field, once" \
    sh -c "test \$(grep -c \"not every process computes in rank 0's numeric environment (rank 1 of 2: blas\\.\" '$w/het.err') -eq 1"
check "... the session's environment records it" "$py" -c "
import json, sqlite3, sys
env = json.loads(sqlite3.connect(sys.argv[1]).execute('select environment from sessions').fetchone()[0])
assert env['ranks'].startswith('rank 1 of 2: blas.') and 'Sandybridge' in env['ranks'], env.get('ranks')
" "$w/het.db"
"$MASQ" replay --db "$w/het.db" >"$w/het.replay" 2>&1
rc=$?
check "... its replay in one process compares within tolerance, saying why ($rc)" \
    sh -c "test $rc -eq 0 && grep -q '^  ranks: recorded rank 1 of 2' '$w/het.replay'"

# more processes than sequences are refused at the open
run_np 5 "$MASQ" run $M --db "$w/np5.db" >/dev/null 2>"$w/np5.err"
check "5 processes for 4 sequences: exit 2" test $? -eq 2
check "... the message says why" grep -q "5 processes for 4 calibration sequences" "$w/np5.err"
check "... and the session is marked failed" sh -c "test \"\$(sqlite3 '$w/np5.db' 'select status from sessions')\" = failed"

# a rank that cannot read its calibration set, or reads another one: every
# rank stops, the message names the rank, the session is marked failed
for case in missing other; do
	if [ "$case" = missing ]; then
		c1="$w/nowhere.safetensors" what="a missing calibration set"
	else
		c1="$w/e/calib.safetensors" what="another calibration set"
	fi
	run_np 2 sh -c 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then c=$2; else c=$1; fi
		exec "$0" run --model "$3" --calib "$c" --threads 1 --epochs 0 --db "$4"' \
	    "$MASQ" "$w/d/calib.safetensors" "$c1" "$w/d/model" "$w/$case.db" >/dev/null 2>"$w/$case.err"
	rc=$?
	check "rank 1 with $what: exit 2 ($rc)" test "$rc" -eq 2
	check "... the message names rank 1" grep -q "masq: rank 1 of 2: " "$w/$case.err"
	check "... once" sh -c "test \$(grep -c '^masq: ' '$w/$case.err') -eq 1"
	check "... the session is marked failed" sh -c "test \"\$(sqlite3 '$w/$case.db' 'select status from sessions')\" = failed"
done
check "... another calibration set is named as such" grep -q "not the calibration set rank 0 reads" "$w/other.err"

# the default inputs (no --model): rank 0 writes the demo before the others
# look, and a rank that cannot reach its demo directory stops the run
(cd "$w" && MASQ_DEMO_DIR="$w/demo-cache" run_np 2 sh -c 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then
		export MASQ_DEMO_DIR=/proc/nowhere; fi
	exec "$0" run --threads 1 --epochs 0 --no-db' "$MASQ" >/dev/null 2>"$w/demo.err")
rc=$?
(cd "$w" && MASQ_DEMO_DIR="$w/demo-cache" run_np 2 "$MASQ" run --threads 1 --epochs 0 --no-db >/dev/null 2>"$w/demo2.err")
rc2=$?
check "rank 1 without a demo directory: exit 2, not a hang ($rc)" test "$rc" -eq 2
check "... the message names rank 1, once" sh -c "test \$(grep -c '^masq: rank 1 of 2: ' '$w/demo.err') -eq 1"
check "the default inputs under mpirun: exit 0 ($rc2), the demo written once" \
    sh -c "test $rc2 -eq 0 && test \$(grep -c 'writing the embedded demo' '$w/demo2.err') -le 1"
done_testing
