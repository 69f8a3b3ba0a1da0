#!/bin/sh
# bench/run.sh: run the benchmarks on the 3b demo preset: bench_forward,
# bench_cmc, bench_reeval, bench_learn, bench_igemm, the whole pipeline a
# layer (on the preset and on BENCH_SCALE times its tokens), the disk
# beside the database (bench/README.md, "Running").
#
#	MASQ=<build>/src/masq sh bench/run.sh <abs_builddir>
#
# Builds nothing (`make bench` builds first).  The demo model is written once
# to <builddir>/bench-work/3b and reused (BENCH_PRESET=tiny|small picks a
# smaller preset for a quick check).  Prints bench_forward's table on 2
# threads and on 1, keeping each in <builddir>/bench-work/, then the two
# machine-readable result lines.  Exits 0 whether or not a target is met;
# non-zero only when something could not run.

set -u

if [ $# -ne 1 ]; then
	echo "usage: MASQ=<build>/src/masq sh bench/run.sh BUILDDIR" >&2
	exit 2
fi
builddir=$1
masq=${MASQ:-$builddir/src/masq}
bench=$builddir/bench/bench_forward
work=$builddir/bench-work
preset=${BENCH_PRESET:-3b}

for f in "$masq" "$bench"; do
	if [ ! -x "$f" ]; then
		echo "bench/run.sh: $f is missing; run 'make bench' in the build directory" >&2
		exit 2
	fi
done

mkdir -p "$work" || exit 2
if [ ! -d "$work/$preset/model" ] || [ ! -f "$work/$preset/calib.safetensors" ]; then
	echo "bench/run.sh: writing the $preset demo to $work/$preset (once)"
	rm -rf "$work/$preset"
	"$masq" demo "$work/$preset" --preset "$preset" || {
		echo "bench/run.sh: masq demo failed" >&2
		rm -rf "$work/$preset"
		exit 1
	}
fi

results=
for t in 2 1; do
	echo
	echo "== threads $t =="
	log=$work/bench_forward-threads$t.txt
	# stream the table as it is printed; keep the exit status past tee
	{ OPENBLAS_NUM_THREADS=$t "$bench" "$work/$preset/model" \
	    "$work/$preset/calib.safetensors" --threads "$t"; echo $? >"$log.rc"; } |
	    tee "$log"
	rc=$(cat "$log.rc" 2>/dev/null || echo 1)
	rm -f "$log.rc"
	out=$(cat "$log")
	if [ "$rc" -ne 0 ]; then
		echo "bench/run.sh: bench_forward failed (exit $rc)" >&2
		exit 1
	fi
	line=$(printf '%s\n' "$out" | grep '^bench_forward: tokens=')
	if printf '%s\n' "$out" | grep -q 'the machine was not quiet'; then
		busy=$(printf '%s\n' "$out" | sed -n 's/^other processes during the timing: \([0-9.]*\) CPUs.*/\1/p')
		line="$line (noisy: other processes used $busy CPUs)"
	fi
	results="$results
threads=$t $line"
done

echo
echo "== summary (ratio = plain sgemm time / layer forward time, same run) =="
printf '%s\n' "$results" | sed '/^$/d'

# ---- bench_cmc: CMC, full SVD against randomized truncated SVD -------------
# One run on 2 threads on a generated d=2048 case (see bench/README.md);
# BENCH_CMC_ARGS adds options (e.g. "--d 1024 --out 1024" for a quick check).
cmc=$builddir/bench/bench_cmc
if [ ! -x "$cmc" ]; then
	echo "bench/run.sh: $cmc is missing; run 'make bench' in the build directory" >&2
	exit 2
fi
echo
echo "== bench_cmc, threads 2 =="
log=$work/bench_cmc-threads2.txt
# shellcheck disable=SC2086 # BENCH_CMC_ARGS is a list of options
{ OPENBLAS_NUM_THREADS=2 "$cmc" --threads 2 ${BENCH_CMC_ARGS:-}; echo $? >"$log.rc"; } |
    tee "$log"
rc=$(cat "$log.rc" 2>/dev/null || echo 1)
rm -f "$log.rc"
if [ "$rc" -ne 0 ]; then
	echo "bench/run.sh: bench_cmc failed (exit $rc)" >&2
	exit 1
fi
echo
echo "== summary (speedup = full SVD time / randomized SVD time, same run) =="
line=$(grep '^bench_cmc: d=' "$log")
if grep -q 'the machine was not quiet' "$log"; then
	busy=$(sed -n 's/^other processes during the timing: \([0-9.]*\) CPUs.*/\1/p' "$log")
	line="$line (noisy: other processes used $busy CPUs)"
fi
printf 'threads=2 %s\n' "$line"
printf 'threads=2 %s\n' "$(grep '^bench_cmc_whitener: d=' "$log")"
printf 'threads=2 %s\n' "$(grep '^bench_cmc_rsvd: d=' "$log")"

# ---- bench_reeval: re-evaluating a layer after an alpha change ----------------
# The TUI's latency: the q/k/v group re-evaluated for vision from the token
# sample, against the full re-quantization of the layer (same run).
reeval=$builddir/bench/bench_reeval
if [ ! -x "$reeval" ]; then
	echo "bench/run.sh: $reeval is missing; run 'make bench' in the build directory" >&2
	exit 2
fi
echo
echo "== bench_reeval, threads 2 =="
log=$work/bench_reeval-threads2.txt
OPENBLAS_NUM_THREADS=2 "$reeval" "$work/$preset/model" "$work/$preset/calib.safetensors" \
    --threads 2 | tee "$log"
grep -q '^bench_reeval: ' "$log" || { echo "bench/run.sh: bench_reeval failed" >&2; exit 1; }
echo
echo "== summary (preview after an alpha change; target under 100 ms) =="
printf 'threads=2 %s\n' "$(grep '^bench_reeval: ' "$log")"

# ---- bench_learn: one training step of learned MAS ---------------------------
# A step on every calibration sequence of layer 0 against the layer's FP
# forward of the same tokens (same run); then, where python3-torch is
# installed, the same step by PyTorch autograd from the same state.
learn=$builddir/bench/bench_learn
if [ ! -x "$learn" ]; then
	echo "bench/run.sh: $learn is missing; run 'make bench' in the build directory" >&2
	exit 2
fi
echo
echo "== bench_learn, threads 2 =="
log=$work/bench_learn-threads2.txt
OPENBLAS_NUM_THREADS=2 "$learn" "$work/$preset/model" "$work/$preset/calib.safetensors" --threads 2 \
    --dump "$work/learn-dump.safetensors" | tee "$log"
grep -q '^bench_learn: tokens=' "$log" || { echo "bench/run.sh: bench_learn failed" >&2; exit 1; }
py=/usr/bin/python3
if [ -x "$py" ] && "$py" -c "import torch" 2>/dev/null; then
	echo
	echo "== the same step by PyTorch autograd, threads 2 =="
	tlog=$work/learn_torch-threads2.txt
	OPENBLAS_NUM_THREADS=2 "$py" "$(dirname "$0")/learn_torch.py" "$work/$preset/model" \
	    "$work/$preset/calib.safetensors" "$work/learn-dump.safetensors" --threads 2 | tee "$tlog"
	ms=$(sed -n 's/^bench_learn: .* step_s=\([0-9.]*\) .*/\1/p' "$log")
	ts=$(sed -n 's/^learn_torch: threads=2 step_s=\([0-9.]*\) .*/\1/p' "$tlog")
	if [ -n "$ms" ] && [ -n "$ts" ]; then
		echo
		echo "== summary (training step; target <= 4x the FP forward) =="
		printf 'threads=2 %s\n' "$(grep '^bench_learn: tokens=' "$log")"
		awk -v m="$ms" -v t="$ts" 'BEGIN { printf "threads=2 torch_step_s=%.4f masq_step_s=%.4f torch/masq=%.2f\n", t, m, t / m }'
	fi
else
	echo
	echo "== summary (training step; target <= 4x the FP forward; no python3-torch: no PyTorch baseline) =="
	printf 'threads=2 %s\n' "$(grep '^bench_learn: tokens=' "$log")"
fi

# ---- bench_igemm: the quantized linears as integer GEMMs ---------------------
# The seven linears of a 3b layer, integer path against the float fake-quant
# path (same run), and PyTorch's dynamic int8 Linear where torch is there.
igemm=$builddir/bench/bench_igemm
if [ ! -x "$igemm" ]; then
	echo "bench/run.sh: $igemm is missing; run 'make bench' in the build directory" >&2
	exit 2
fi
torch=
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import torch" 2>/dev/null; then
	torch=--torch
fi
echo
echo "== bench_igemm, threads 2 =="
log=$work/bench_igemm-threads2.txt
OPENBLAS_NUM_THREADS=2 srcdir=$(dirname "$0")/.. "$igemm" --threads 2 $torch | tee "$log"
grep -q '^bench_igemm: tokens=' "$log" || { echo "bench/run.sh: bench_igemm failed" >&2; exit 1; }

# ---- the whole pipeline per layer against the layer's FP forward --------------
# masq run, mas-cmc with the defaults, closed form (--epochs 0: what the
# target counts), then learned (the default 2 epochs) beside it unless
# BENCH_LEARNED=0; each layer's seconds from the run's JSON against
# bench_forward's 2-thread layer time measured above.
fwd_ms=$(sed -n 's/^bench_forward: .* layer_ms=\([0-9.]*\) .*/\1/p' "$work/bench_forward-threads2.txt")
for ep in 0 2; do
	[ "$ep" = 2 ] && [ "${BENCH_LEARNED:-1}" = 0 ] && continue
	echo
	echo "== masq run --method mas-cmc --epochs $ep, threads 2 =="
	log=$work/run-epochs$ep.json
	OPENBLAS_NUM_THREADS=2 /usr/bin/time -f "wall %e s, max RSS %M KB" "$masq" run --model "$work/$preset/model" \
	    --calib "$work/$preset/calib.safetensors" --method mas-cmc --epochs "$ep" --no-db --json \
	    >"$log" 2>"$log.err" || { cat "$log.err" >&2; echo "bench/run.sh: masq run failed" >&2; exit 1; }
	tail -1 "$log.err"
	wall=$(sed -n 's/^wall \([0-9.]*\) s.*/\1/p' "$log.err" | tail -1)
	/usr/bin/python3 - "$log" "$fwd_ms" "$ep" "$wall" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
fwd = float(sys.argv[2]) / 1e3
secs = [l["seconds"] for l in r["layers"]]
# a layer's "seconds" covers calibrate to next-layer; learning is its own
# command, so the mean comes from the wall time (the whole run's)
print("quantize per layer (without learning): " + " ".join("%.1f s" % t for t in secs))
mean = float(sys.argv[4]) / len(secs)
print("pipeline: epochs=%s layers=%d mean_layer_s=%.2f fp_forward_s=%.3f ratio=%.1f target=4.0 %s"
      % (sys.argv[3], len(secs), mean, fwd, mean / fwd, "PASS" if mean / fwd <= 4.0 else "BELOW"))
PY
done

# ---- the same pipeline on a calibration set BENCH_SCALE times the preset's ----
# The preset's 2047 tokens make CMC's per-layer cost, which does not grow
# with the tokens, weigh more than on a real set (the reference's 128
# samples are about 60 times as many).  The preset's set and the sets of
# BENCH_SCALE - 1 demos written with other seeds, concatenated
# (calib_concat.py), run through bench_forward and the closed form again;
# the two runs give the layer's fixed cost and its cost per token.
# BENCH_SCALE=1 skips it (default 8).
scale=${BENCH_SCALE:-8}
if [ "$scale" -gt 1 ]; then
	echo
	echo "== the pipeline on $scale times the $preset calibration tokens, threads 2 =="
	big=$work/$preset-x$scale.safetensors
	if [ ! -f "$big" ]; then
		sets=$work/$preset/calib.safetensors
		s=1
		while [ "$s" -lt "$scale" ]; do
			d=$work/seed$s
			rm -rf "$d"
			"$masq" demo "$d" --preset "$preset" --seed "$s" > /dev/null ||
			    { echo "bench/run.sh: masq demo --seed $s failed" >&2; exit 1; }
			rm -rf "$d/model"
			sets="$sets $d/calib.safetensors"
			s=$((s + 1))
		done
		# shellcheck disable=SC2086 # one word a set
		/usr/bin/python3 "$(dirname "$0")/calib_concat.py" "$big" $sets ||
		    { echo "bench/run.sh: calib_concat.py failed" >&2; rm -f "$big"; exit 1; }
		s=1
		while [ "$s" -lt "$scale" ]; do rm -rf "$work/seed$s"; s=$((s + 1)); done
	fi
	log=$work/bench_forward-x$scale.txt
	OPENBLAS_NUM_THREADS=2 "$bench" "$work/$preset/model" "$big" --threads 2 > "$log" 2>&1 ||
	    { cat "$log" >&2; echo "bench/run.sh: bench_forward on $big failed" >&2; exit 1; }
	grep '^bench_forward: tokens=' "$log"
	fwd_big=$(sed -n 's/^bench_forward: .* layer_ms=\([0-9.]*\) .*/\1/p' "$log")
	log=$work/run-epochs0-x$scale.json
	OPENBLAS_NUM_THREADS=2 /usr/bin/time -f "wall %e s, max RSS %M KB" "$masq" run --model "$work/$preset/model" \
	    --calib "$big" --method mas-cmc --epochs 0 --no-db --json \
	    >"$log" 2>"$log.err" || { cat "$log.err" >&2; echo "bench/run.sh: masq run failed" >&2; exit 1; }
	tail -1 "$log.err"
	wall0=$(sed -n 's/^wall \([0-9.]*\) s.*/\1/p' "$work/run-epochs0.json.err" | tail -1)
	wall=$(sed -n 's/^wall \([0-9.]*\) s.*/\1/p' "$log.err" | tail -1)
	/usr/bin/python3 - "$work/run-epochs0.json" "$wall0" "$fwd_ms" "$log" "$wall" "$fwd_big" <<'PY'
import json, sys
a = sys.argv[1:]
def point(path, wall, fwd_ms):
    r = json.load(open(path))
    n = r["tokens"]["all"]
    return n, float(wall) / len(r["layers"]), float(fwd_ms) / 1e3
n1, l1, _ = point(a[0], a[1], a[2])
n2, l2, f2 = point(a[3], a[4], a[5])
print("pipeline: epochs=0 tokens=%d mean_layer_s=%.2f fp_forward_s=%.3f ratio=%.2f target=4.0 %s"
      % (n2, l2, f2, l2 / f2, "PASS" if l2 / f2 <= 4.0 else "BELOW"))
# layer(n) = fixed + per_token n through the two runs; the FP layer's
# seconds a token from the larger one
per = (l2 - l1) / (n2 - n1)
fixed = l1 - per * n1
f = f2 / n2
cross = "%.0f" % max(0.0, fixed / (4 * f - per)) if 4 * f > per else "none"
print("pipeline_scaling: tokens=%d,%d fixed_s=%.2f per_token_ratio=%.2f tokens_at_4x=%s"
      % (n1, n2, fixed, per / f, cross))
PY
fi

# ---- disk: checkpoints beside the database --------------------------------------
# An sq session over every layer, keeping every checkpoint
# (MASQ_KEEP_CHECKPOINTS=1, what masq did before it pruned) and keeping the
# latest only (the default); then what zstd would save on the one kept.
echo
echo "== disk beside the database, sq over $preset =="
for keep in 1 0; do
	rm -rf "$work/disk$keep.db" "$work/disk$keep.db"-* "$work/disk$keep.db.blobs"
	MASQ_KEEP_CHECKPOINTS=$keep OPENBLAS_NUM_THREADS=2 "$masq" run --model "$work/$preset/model" \
	    --calib "$work/$preset/calib.safetensors" --method sq --db "$work/disk$keep.db" > /dev/null 2>&1 ||
	    { echo "bench/run.sh: masq run --method sq failed" >&2; exit 1; }
	bytes=$(du -sb "$work/disk$keep.db.blobs" | cut -f1)
	echo "disk: keep_all=$keep blob_bytes=$bytes"
done
big=$(ls -S "$work/disk0.db.blobs"/* | head -1)
if command -v zstd > /dev/null; then
	z=$(zstd -q -c -3 "$big" | wc -c)
	awk -v a="$(wc -c < "$big")" -v z="$z" 'BEGIN { printf "disk: largest kept blob %d bytes, zstd -3 %d (%.3f)\n", a, z, z / a }'
fi
exit 0
