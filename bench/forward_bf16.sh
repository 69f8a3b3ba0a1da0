#!/bin/sh
# bench/forward_bf16.sh: masq's bf16 layer forward (bench_forward --compute
# bf16) against PyTorch's bf16 forward of the same layer
# (bench/forward_torch.py), in one run: the two alternate ROUNDS times (each
# the median of 3 forwards after a warm-up), and the medians of the rounds
# give the ratio (issue 16 target 4: <= 1.0).
#
#   sh bench/forward_bf16.sh [BUILDDIR] [PRESET] [ROUNDS]   (defaults: . 3b 5)
#
# Prints one line per round and, last:
#   forward_bf16: tokens=N masq_bf16_ms=... torch_bf16_ms=... ratio=... target=1.0 PASS|BELOW
set -u
builddir=${1:-.}
preset=${2:-3b}
rounds=${3:-5}
src=$(cd "$(dirname "$0")/.." && pwd)
py=/usr/bin/python3
if ! "$py" -c 'import torch' 2>/dev/null; then
	echo "bench/forward_bf16.sh: $py cannot import torch (Debian: python3-torch)" >&2
	exit 1
fi
work=$builddir/bench-work/forward_bf16
mkdir -p "$work" || exit 1
[ -d "$work/$preset/model" ] || "$builddir/src/masq" demo "$work/$preset" --preset "$preset" > /dev/null || exit 1
m=$work/$preset/model c=$work/$preset/calib.safetensors
: > "$work/masq.ms"
: > "$work/torch.ms"
i=0
while [ $i -lt "$rounds" ]; do
	i=$((i + 1))
	a=$("$builddir/bench/bench_forward" "$m" "$c" --threads 2 --reps 3 --compute bf16 |
		sed -n 's/^bench_forward: tokens=\([0-9]*\) layer_ms=\([0-9.]*\) .*/\1 \2/p')
	b=$("$py" "$src/bench/forward_torch.py" "$m" "$c" --threads 2 --reps 3 |
		sed -n 's/^forward_torch: .* bf16_ms=\([0-9.]*\) .*/\1/p')
	[ -n "$a" ] && [ -n "$b" ] || { echo "bench/forward_bf16.sh: a run failed" >&2; exit 1; }
	tokens=${a% *}
	echo "${a#* }" >> "$work/masq.ms"
	echo "$b" >> "$work/torch.ms"
	echo "round $i: masq bf16 ${a#* } ms, torch bf16 $b ms"
done
med() { sort -n "$1" | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
ma=$(med "$work/masq.ms")
tb=$(med "$work/torch.ms")
awk -v t="$tokens" -v a="$ma" -v b="$tb" 'BEGIN {
	r = a / b
	printf "forward_bf16: tokens=%d masq_bf16_ms=%.1f torch_bf16_ms=%.1f ratio=%.3f target=1.0 %s\n",
	    t, a, b, r, r <= 1.0 ? "PASS" : "BELOW"
}'
