#!/bin/sh
# bench/memory.sh: peak resident memory of masq forward and masq run against
# what a layer needs, on the 7b preset (Qwen2.5-VL-7B's layer shapes, 2
# layers) and the 72b preset (one Qwen2-72B layer).
#
#	MASQ=<build>/src/masq sh bench/memory.sh <abs_builddir> [7b] [72b]
#
# The bound (issue 16): one layer's weights in f32 + the calibration
# activations the layer needs + 25%, where the activations are the
# calibration set's embeddings, the two hidden-state streams (FP and
# quantized) and the engine's per-layer buffers (q, k, v, the attention
# output, gate and up, over every calibration token).  Peak RSS is
# /usr/bin/time's maximum resident set size of the whole process.  The
# demos are written once under <builddir>/bench-work/.  `run` is the
# closed-form mas-cmc pipeline (--epochs 0), no database; on the 72b preset
# only forward runs unless BENCH_72B_RUN=1 (the whitening of 8192 channels
# takes long on 2 cores).  Exit 0 whatever the figures, non-zero when
# something could not run.
set -u
if [ $# -lt 1 ]; then
	echo "usage: MASQ=<build>/src/masq sh bench/memory.sh BUILDDIR [7b] [72b]" >&2
	exit 2
fi
builddir=$1
shift
masq=${MASQ:-$builddir/src/masq}
work=$builddir/bench-work
presets=${*:-7b 72b}
py=/usr/bin/python3
mkdir -p "$work" || exit 2
for preset in $presets; do
	d=$work/$preset
	if [ ! -f "$d/calib.safetensors" ]; then
		echo "bench/memory.sh: writing the $preset demo to $d (once)"
		rm -rf "$d"
		"$masq" demo "$d" --preset "$preset" > /dev/null || { echo "bench/memory.sh: masq demo failed" >&2; exit 1; }
	fi
	bound=$("$masq" inspect --json "$d/model" | "$py" -c '
import json, sys
c = json.load(sys.stdin)
h, i, nh, kv, hd = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
n = int(sys.argv[1])
w = 4 * (2 * h * nh * hd + 2 * h * kv * hd + 3 * h * i)
act = 4 * n * (3 * h + 2 * nh * hd + 2 * kv * hd + 2 * i)
print(w, act, int(1.25 * (w + act)))' "$("$masq" inspect --json "$d/calib.safetensors" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')")
	set -- $bound
	w=$1 act=$2 lim=$3
	echo
	echo "== $preset: one layer's f32 weights $((w / 1048576)) MiB, activations $((act / 1048576)) MiB, bound $((lim / 1048576)) MiB =="
	cmds="forward"
	[ "$preset" != 72b ] || [ "${BENCH_72B_RUN:-0}" = 1 ] && cmds="forward run"
	for cmd in $cmds; do
		if [ "$cmd" = forward ]; then
			set -- forward --model "$d/model" --calib "$d/calib.safetensors" --out "$work/$preset-forward.safetensors"
		else
			set -- run --model "$d/model" --calib "$d/calib.safetensors" --method mas-cmc --epochs 0 --no-db --json
		fi
		OPENBLAS_NUM_THREADS=2 /usr/bin/time -f "%M %e" -o "$work/$preset-$cmd.time" "$masq" "$@" \
		    > "$work/$preset-$cmd.out" 2> "$work/$preset-$cmd.err" ||
		    { cat "$work/$preset-$cmd.err" >&2; echo "bench/memory.sh: masq $cmd failed" >&2; exit 1; }
		read -r kb secs < "$work/$preset-$cmd.time"
		awk -v p="$preset" -v c="$cmd" -v kb="$kb" -v s="$secs" -v lim="$lim" 'BEGIN {
			r = kb * 1024 / lim
			printf "memory: preset=%s cmd=%s peak_mib=%.0f bound_mib=%.0f ratio=%.2f seconds=%s %s\n",
			    p, c, kb / 1024, lim / 1048576, r, s, r <= 1 ? "PASS" : "ABOVE"
		}'
	done
	rm -f "$work/$preset-forward.safetensors"
done
exit 0
