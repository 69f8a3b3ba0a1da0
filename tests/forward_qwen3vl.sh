#!/bin/sh
# forward_qwen3vl.sh: `masq forward` on Qwen3-VL against the independent
# float64 numpy reference in ref_qwen3vl.py (written from transformers'
# Qwen3VLTextModel: per-head q_norm/k_norm before RoPE, the interleaved
# M-RoPE, DeepStack), layer by layer and chained, on three tiny checkpoints
# that ref_qwen3vl.py --make-model writes:
#   q457    config.json as transformers 4.57 writes it (rope_scaling and
#           rope_theta in text_config), 2 deepstack features;
#   q5      config.json as v5 writes it (rope_parameters), 4 layers, 3
#           deepstack features (as many as the released models have);
#   k0      4.57 style, no deepstack tensors in the calibration set.
# Each calibration set holds three sequences of text, image blocks with
# get_rope_index's t/h/w positions, and text after them.  ref_qwen3vl.py's
# self-test (the oracle against loops, hand-computed cases and a float32
# twin with and without deliberate faults) runs first.
# All TAP on stdout comes from ref_qwen3vl.py (one plan); this script writes
# only "# " comments there.  A failed masq step shows up as that case's
# "not ok" line (its output file is missing), with masq's messages below.

if [ -z "$PYTHON3" ] || [ ! -x "$PYTHON3" ] || ! "$PYTHON3" -c 'import numpy' 2>/dev/null; then
	# The TAP driver counts a plain exit 77 as an error; a skip plan is the
	# TAP way to skip.
	echo "1..0 # SKIP no python3 with numpy (PYTHON3=$PYTHON3)"
	exit 0
fi

w=${builddir:?}/work/forward_qwen3vl
src=${srcdir:?}
if ! { rm -rf "$w" && mkdir -p "$w" && cd "$w"; }; then
	echo "1..1"
	echo "not ok 1 - cannot create $w"
	exit 1
fi

# run LOG CMD...: run CMD with its output in LOG; on failure echo LOG as comments.
run() {
	log=$1
	shift
	if ! "$@" >"$log" 2>&1; then
		echo "# failed: $*"
		sed 's/^/#   /' "$log"
	fi
}

run make.log "$PYTHON3" "$src/ref_qwen3vl.py" --make-model q457 --seed 1 --deepstack 2
run make.log "$PYTHON3" "$src/ref_qwen3vl.py" --make-model q5 --seed 2 --layers 4 --deepstack 3 --v5
run make.log "$PYTHON3" "$src/ref_qwen3vl.py" --make-model k0 --seed 3 --deepstack 0
for c in q457 q5 k0; do
	run "$c.forward.log" "$MASQ" forward --model "$c/model" \
		--calib "$c/calib.safetensors" --out "$c/h.safetensors"
done

exec "$PYTHON3" "$src/ref_qwen3vl.py" --self-test \
	q457/model q457/calib.safetensors q457/h.safetensors \
	q5/model q5/calib.safetensors q5/h.safetensors \
	k0/model k0/calib.safetensors k0/h.safetensors
