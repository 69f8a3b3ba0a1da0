#!/bin/sh
# forward_ref.sh: `masq forward` against the independent float64 numpy
# reference in ref_forward.py, layer by layer and chained, on three inputs:
#   demo    the tiny demo: text, vision and audio tokens, several sequences
#           of different lengths, 3-row mrope positions with image blocks;
#   rope1d  the same weights with rope_scaling removed from config.json,
#           one-row position_ids (plain RoPE) and a few near-zero tokens;
#   nopos   the demo model with position_ids dropped from the calibration
#           set (positions default to 0..len-1 within each sequence).
# All TAP on stdout comes from ref_forward.py (one plan); this script writes
# only "# " comments there.  A failed masq step shows up as that case's
# "not ok" line (its output file is missing), with masq's messages below.

if [ -z "$PYTHON3" ] || [ ! -x "$PYTHON3" ] || ! "$PYTHON3" -c 'import numpy' 2>/dev/null; then
	# The TAP driver counts a plain exit 77 as an error; a skip plan is the
	# TAP way to skip.
	echo "1..0 # SKIP no python3 with numpy (PYTHON3=$PYTHON3)"
	exit 0
fi

w=${builddir:?}/work/forward_ref
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

run demo.log "$MASQ" demo demo --preset tiny
run variants.log "$PYTHON3" "$src/ref_forward.py" --make-variant \
	demo/model demo/calib.safetensors rope1d 1row
run variants.log "$PYTHON3" "$src/ref_forward.py" --make-variant \
	demo/model demo/calib.safetensors nopos none
# the variants' weights are symbolic links to the demo's, outside their
# directories: followed on purpose
for c in demo rope1d nopos; do
	run "$c.forward.log" env MASQ_FOLLOW_SYMLINKS=1 "$MASQ" forward --model "$c/model" \
		--calib "$c/calib.safetensors" --out "$c/h.safetensors"
done

exec "$PYTHON3" "$src/ref_forward.py" --self-test \
	demo/model demo/calib.safetensors demo/h.safetensors \
	rope1d/model rope1d/calib.safetensors rope1d/h.safetensors \
	nopos/model nopos/calib.safetensors nopos/h.safetensors
