#!/bin/sh
# Regenerate the example sessions (SQL dumps) on the tiny demo:
#   sh sessions/examples/make-examples.sh BUILDDIR
# One per method family; tests/examples.sh loads and replays each.  Results
# are pinned to the build and its BLAS kernels: regenerate them whenever the
# numerics change (the replay test says so when they diverge).
# sq-w8a8-search, mas-w4a8 and mas-cmc-w4a6 in the repository were recorded
# by masq 0.1, before learning and the mean SQNR floor: they check that such
# sessions still replay as they were recorded.  Regenerating records them
# anew (closed form, --epochs 0, in today's settings); mas-cmc-learned-w4a8
# learns; mas-cmc-budget-w4a8 allocates its ranks to a byte budget.
set -eu
build=$1
here=$(cd "$(dirname "$0")" && pwd)
masq=$build/src/masq
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$masq" demo "$tmp/demo" --preset tiny >/dev/null
M="--model $tmp/demo/model --calib $tmp/demo/calib.safetensors"
export OPENBLAS_NUM_THREADS=2
only=${2:-}	# make-examples.sh BUILDDIR NAME: that one alone
"$masq" run $M --db "$tmp/x.db" --method sq --wbits 8 --abits 8 --alpha search --alpha-grid 0.3:0.1:0.8 --threads 2 >/dev/null
"$masq" run $M --db "$tmp/x.db" --method mas --epochs 0 --wbits 4 --abits 8 --set 1.qkv.alpha.vision=0.7 --threads 2 >/dev/null
"$masq" run $M --db "$tmp/x.db" --method mas-cmc --epochs 0 --wbits 4 --abits 6 --rank 16 --set '*'.o.rank=0.5 --threads 2 >/dev/null
"$masq" run $M --db "$tmp/x.db" --method mas-cmc --wbits 4 --abits 8 --alpha search --alpha-grid 0.3:0.2:0.7 --threads 2 >/dev/null
"$masq" run $M --db "$tmp/x.db" --method mas-cmc --epochs 0 --wbits 4 --abits 8 --rank-budget 150kB --set 1.o.rank=4 --threads 2 >/dev/null
i=1
for name in sq-w8a8-search mas-w4a8 mas-cmc-w4a6 mas-cmc-learned-w4a8 mas-cmc-budget-w4a8; do
	if [ -z "$only" ] || [ "$name" = "$only" ]; then
		"$masq" sessions dump $i --db "$tmp/x.db" | sed "s|$tmp/demo|DEMO|g" > "$here/$name.sql"
	fi
	i=$((i + 1))
done
echo "wrote $(ls "$here"/*.sql | wc -l) examples to $here"
