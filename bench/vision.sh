#!/bin/sh
# bench/vision.sh: the vision tower's images per second (bench_vision, the
# tower of masq calib) against PyTorch running the same tower on the same
# pixels and threads (bench/vision_torch.py, float32 and bfloat16), on a
# random Qwen2.5-VL-3B-shaped tower (32 blocks, width 1280, full attention
# in blocks 7, 15, 23, 31) written once under WORKDIR:
#
#	BENCH_VISION=<build>/bench/bench_vision sh bench/vision.sh WORKDIR [THREADS]
#
# Images: 4 of 448 x 448 pixels (1024 patches each; BENCH_GRIDS to change).
# PyTorch is Debian's python3-torch; without it only masq's line prints.
set -u
work=${1:?usage: BENCH_VISION=... sh bench/vision.sh WORKDIR [THREADS]}
threads=${2:-2}
here=$(cd "$(dirname "$0")" && pwd)
bv=${BENCH_VISION:?BENCH_VISION must point at bench/bench_vision}
py=/usr/bin/python3
grids=${BENCH_GRIDS:-"1,32,32;1,32,32;1,32,32;1,32,32"}
mkdir -p "$work" || exit 2
if [ ! -f "$work/tower3b/model.safetensors" ]; then
	echo "bench/vision.sh: writing a random 3B-shaped tower to $work/tower3b (once)"
	"$py" "$here/vision_torch.py" make "$work/tower3b" || exit 1
fi
"$py" "$here/vision_torch.py" pixels "$work/pixels.safetensors" --grids "$grids" || exit 1
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); threads $threads; OpenBLAS $(OPENBLAS_VERBOSE=2 "$bv" 2>&1 | sed -n 's/^Core: //p' | head -1)"
m=$("$bv" "$work/tower3b" "$work/pixels.safetensors" --threads "$threads" --repeat 2) || exit 1
echo "masq  $m"
ms=$(echo "$m" | sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p')
if "$py" -c 'import torch' 2>/dev/null; then
	for dt in float32 bfloat16; do
		t=$("$py" "$here/vision_torch.py" time "$work/tower3b" "$work/pixels.safetensors" --threads "$threads" \
			--dtype "$dt") || exit 1
		echo "torch $t"
		ts=$(echo "$t" | sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p')
		awk -v a="$ms" -v b="$ts" -v d="$dt" 'BEGIN { printf "vision: masq/torch_%s=%.2f\n", d, a / b }'
	done
else
	echo "vision: no torch in $py (python3-torch): masq's figure only"
fi
