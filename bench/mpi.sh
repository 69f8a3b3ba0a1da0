#!/bin/sh
# bench/mpi.sh: masq run and masq forward across processes (issue 18), on
# the 3b preset (Qwen2.5-VL-3B's layer shapes, 4 layers).
#
#	MASQ=<a --with-mpi build>/src/masq sh bench/mpi.sh <abs_builddir> [preset]
#
# masq run is the closed-form mas-cmc pipeline (--epochs 0, no database),
# in one process of 2 threads and under mpirun as 1x2, 1x1 and 2x1
# (processes x BLAS threads, --bind-to none), one run each; then the
# learned one (2 epochs) as 1x1 and 2x1; masq forward as the first.  Per configuration: the whole process's time, the run's
# calibrate phase (the FP forward with its statistics, reduced across the
# processes), learn phase and quantize phase (compensation's factors shared out by
# linear and modality, the quantized forward, its metrics) summed over the
# layers, and the largest process's peak RSS (/usr/bin/time).  The demo is
# written once under <builddir>/bench-work/.  Exit 0 whatever the figures,
# non-zero when something could not run.
set -u
if [ $# -lt 1 ]; then
	echo "usage: MASQ=<build>/src/masq sh bench/mpi.sh BUILDDIR [preset]" >&2
	exit 2
fi
builddir=$1
preset=${2:-3b}
masq=${MASQ:-$builddir/src/masq}
work=$builddir/bench-work
py=/usr/bin/python3
"$masq" --version | grep -q "built with.*MPI" || { echo "bench/mpi.sh: $masq is not a --with-mpi build" >&2; exit 2; }
command -v mpirun >/dev/null 2>&1 || { echo "bench/mpi.sh: no mpirun (Debian: openmpi-bin)" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
mkdir -p "$work" || exit 2
d=$work/$preset
if [ ! -f "$d/calib.safetensors" ]; then
	echo "bench/mpi.sh: writing the $preset demo to $d (once)"
	rm -rf "$d"
	"$masq" demo "$d" --preset "$preset" >/dev/null || { echo "bench/mpi.sh: masq demo failed" >&2; exit 1; }
fi
M="--model $d/model --calib $d/calib.safetensors"
echo "OpenBLAS kernels: $(OPENBLAS_VERBOSE=2 "$masq" --version 2>&1 | sed -n 's/^Core: //p' | head -1)" \
    "(OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset})"
# run_table TITLE TAG "ARGS" CONFIGS...: masq run ARGS in each "processes threads"
run_table() {
	title=$1 tag=$2 args=$3
	shift 3
	printf '%-28s %10s %10s %10s %10s %10s\n' "$title" "whole s" "calib s" "learn s" "quant s" "peak MB"
	for cfg in "$@"; do
		set -- $cfg
		np=$1 t=$2
		out=$work/mpi-$tag-$np-$t.json
		rss=$work/mpi-$tag-$np-$t.rss
		rm -f "$rss"
		t0=$(date +%s.%N)
		if [ "$np" -eq 0 ]; then
			/usr/bin/time -a -o "$rss" -f %M "$masq" run $M $args --no-db --threads "$t" --json \
			    >"$out" 2>/dev/null || { echo "bench/mpi.sh: masq run failed" >&2; exit 1; }
			label="one process, $t threads"
		else
			mpirun -np "$np" --bind-to none /usr/bin/time -a -o "$rss" -f %M "$masq" run $M $args \
			    --no-db --threads "$t" --json >"$out" 2>/dev/null || { echo "bench/mpi.sh: mpirun masq run failed" >&2; exit 1; }
			label="$np x $t"
		fi
		t1=$(date +%s.%N)
		"$py" - "$out" "$rss" "$t0" "$t1" "$label" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ph = [l["phase_seconds"] for l in d["layers"]]
rss = max(int(x) for x in open(sys.argv[2]).read().split())
print("%-28s %10.2f %10.2f %10.2f %10.2f %10.0f" % (sys.argv[5], float(sys.argv[4]) - float(sys.argv[3]),
      sum(p["calibrate"] for p in ph), sum(p["learn"] for p in ph), sum(p["quantize"] for p in ph), rss / 1024))
PY
	done
}
run_table "masq run, processes x threads" run "--method mas-cmc --epochs 0" "0 2" "1 2" "1 1" "2 1"
# the learned pipeline (the default: 2 epochs), beside it: its steps are
# taken one after another whatever the processes
run_table "learned (2 epochs)" learn "--method mas-cmc" "1 1" "2 1"
printf '%-28s %10s %10s\n' "masq forward" "whole s" "peak MB"
for cfg in "0 2" "1 1" "2 1"; do
	set -- $cfg
	np=$1 t=$2
	rss=$work/mpi-fwd-$np-$t.rss
	rm -f "$rss"
	t0=$(date +%s.%N)
	if [ "$np" -eq 0 ]; then
		/usr/bin/time -a -o "$rss" -f %M "$masq" forward $M --threads "$t" >/dev/null 2>&1 || exit 1
		label="one process, $t threads"
	else
		mpirun -np "$np" --bind-to none /usr/bin/time -a -o "$rss" -f %M "$masq" forward $M --threads "$t" \
		    >/dev/null 2>&1 || exit 1
		label="$np x $t"
	fi
	t1=$(date +%s.%N)
	"$py" -c "import sys; r = max(int(x) for x in open(sys.argv[1]).read().split()); print('%-28s %10.2f %10.0f' % (sys.argv[4], float(sys.argv[3]) - float(sys.argv[2]), r / 1024))" \
	    "$rss" "$t0" "$t1" "$label"
done
