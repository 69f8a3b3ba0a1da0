#!/bin/sh
# masq forward under mpirun (configure --with-mpi): 1 to 4 processes
# (oversubscribed on a 2-core machine) against one process on the tiny demo,
# the same bits; a rank that fails stops every rank with a message naming
# it; the commands that do not shard yet refuse to run in several processes
# (masq run: tests/mpi_run.sh).  Skipped, with the reason, in a build
# without MPI or without mpirun.
. "$srcdir/lib.sh"
w=$(workdir mpi)
py=${PYTHON3:-/usr/bin/python3}
mpi_setup

"$MASQ" demo "$w/d" --preset tiny >/dev/null || { not_ok "masq demo"; done_testing; exit; }
M="--model $w/d/model --calib $w/d/calib.safetensors --threads 1"
"$MASQ" forward $M --out "$w/one.safetensors" --json >"$w/one.json" 2>"$w/one.err"
check "one process: masq forward exits 0" test $? -eq 0

# The same bits: OpenBLAS's sgemm rounds a row differently with the number
# of rows it is given, so every linear runs one GEMM a sequence, and a
# rank's share of whole sequences is computed as one process computes it.
# The RMS is a sum over the processes, taken in another association: 1e-12.
tol=0 sumtol=1e-12
for np in 1 2 3 4; do
	run_np "$np" "$MASQ" forward $M --out "$w/np$np.safetensors" --json >"$w/np$np.json" 2>"$w/np$np.err"
	rc=$?
	check "mpirun -np $np masq forward exits 0 ($rc)" test "$rc" -eq 0
	[ "$rc" -eq 0 ] || sed 's/^/#   /' "$w/np$np.err"
	if [ -s "$w/np$np.safetensors" ]; then
		tap_run "np $np against one process" "$w/np$np.tap" "$py" "$srcdir/mpi_check.py" \
		    "$w/one.safetensors" "$w/one.json" "$w/np$np.safetensors" "$w/np$np.json" "$np" "$tol" "$sumtol"
	else
		not_ok "mpirun -np $np wrote $w/np$np.safetensors"
	fi
	check "mpirun -np $np: no temporary file left" sh -c "! ls '$w'/np$np.safetensors.tmp* >/dev/null 2>&1"
done
run_np 2 "$MASQ" forward $M >"$w/text.out" 2>"$w/text.err"
check "mpirun -np 2 prints its table once" sh -c "test \$(grep -c '^layer ' '$w/text.out') -eq 1 && grep -q '2 processes' '$w/text.out'"

# a Qwen3-VL set with deepstack features (added at the vision tokens of
# each rank's own share): 2 and 3 processes against one
"$py" "$srcdir/ref_qwen3vl.py" --make-model "$w/q" --seed 4 --layers 3 --deepstack 2 >/dev/null 2>&1
Q="--model $w/q/model --calib $w/q/calib.safetensors --threads 1"
"$MASQ" forward $Q --out "$w/q1.safetensors" --json >"$w/q1.json" 2>"$w/q1.err"
check "Qwen3-VL with deepstack, one process: exit 0" test $? -eq 0
# the deepstack features join each rank's own vision rows: the same bits too
for np in 2 3; do
	run_np "$np" "$MASQ" forward $Q --out "$w/qn$np.safetensors" --json >"$w/qn$np.json" 2>"$w/qn$np.err"
	check "Qwen3-VL with deepstack, mpirun -np $np: exit 0" test $? -eq 0
	tap_run "Qwen3-VL np $np against one process" "$w/qn$np.tap" "$py" "$srcdir/mpi_check.py" \
	    "$w/q1.safetensors" "$w/q1.json" "$w/qn$np.safetensors" "$w/qn$np.json" "$np" "$tol" "$sumtol"
done

# more processes than sequences (the tiny demo has 4)
run_np 5 "$MASQ" forward $M >"$w/np5.out" 2>"$w/np5.err"
rc=$?
check "5 processes for 4 sequences: exit 2 ($rc)" test "$rc" -eq 2
check "... the message says why" grep -q "4 sequences for 5 processes" "$w/np5.err"

# one rank whose calibration file is broken: every rank stops, the message
# names the rank, nothing is written, nothing hangs
head -c 100 "$w/d/calib.safetensors" >"$w/broken.safetensors"
run_np 2 sh -c 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then c=$2; else c=$1; fi
	exec "$0" forward --model "$3" --calib "$c" --threads 1 --out "$4"' \
    "$MASQ" "$w/d/calib.safetensors" "$w/broken.safetensors" "$w/d/model" "$w/bad.safetensors" \
    >"$w/bad.out" 2>"$w/bad.err"
rc=$?
check "a rank with a broken calibration set: the run fails ($rc)" sh -c "test $rc -ne 0 && test $rc -ne 124"
check "... the message names rank 1" grep -q "rank 1 of 2 stopped the run" "$w/bad.err"
check "... and the file" grep -q "broken.safetensors" "$w/bad.err"
check "... nothing is written" sh -c "! ls '$w'/bad.safetensors* >/dev/null 2>&1"

# the commands that do not shard yet (masq run: tests/mpi_run.sh)
run_np 2 "$MASQ" inspect "$w/d/model" >"$w/insp.out" 2>"$w/insp.err"
rc=$?
check "mpirun -np 2 masq inspect: exit 2 ($rc)" test "$rc" -eq 2
check "... says which commands run in several processes" grep -q "only masq run, masq resume and masq forward run in several processes" "$w/insp.err"
(cd "$w" && MASQ_DEMO_DIR="$w/demo-cache" MASQ_DB="$w/main.db" run_np 2 "$MASQ" >"$w/main.out" 2>"$w/main.err")
rc=$?
check "mpirun -np 2 masq (the main job): exit 2 ($rc)" test "$rc" -eq 2
check "... refused as every command but run and forward is" grep -q "only masq run, masq resume and masq forward run in several processes" "$w/main.err"
check "... writing neither a demo nor a database" sh -c "test ! -e '$w/demo-cache' && test ! -e '$w/main.db'"
OPENBLAS_CORETYPE=Haswell "$MASQ" run --model "$w/d/model" --calib "$w/d/calib.safetensors" --method sq \
    --db "$w/one.db" >/dev/null 2>&1
run_np 1 "$MASQ" run --model "$w/d/model" --calib "$w/d/calib.safetensors" --no-db --method sq >"$w/run1.out" 2>"$w/run1.err"
check "mpirun -np 1 masq run runs as one process" test $? -eq 0
# replay runs itself again to pin the recorded kernels: one process under
# mpirun must be able to
OPENBLAS_CORETYPE=Sandybridge run_np 1 -x OPENBLAS_CORETYPE "$MASQ" replay --db "$w/one.db" >"$w/replay.out" 2>"$w/replay.err"
rc=$?
check "mpirun -np 1 masq replay of a Haswell session under other kernels: exit 0 ($rc)" test "$rc" -eq 0
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$w/replay.err"
done_testing
