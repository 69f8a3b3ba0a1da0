#!/bin/sh
# Regenerate the example sessions (SQL dumps) on the tiny demo:
#   sh sessions/examples/make-examples.sh BUILDDIR
# One per method family; tests/examples.sh loads and replays each.  Results
# are pinned to the build and its BLAS kernels: regenerate them whenever the
# numerics change (the replay test says so when they diverge).
set -eu
build=$1
here=$(cd "$(dirname "$0")" && pwd)
masq=$build/src/masq
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$masq" demo "$tmp/demo" --preset tiny >/dev/null
M="--model $tmp/demo/model --calib $tmp/demo/calib.safetensors"
export OPENBLAS_NUM_THREADS=2
"$masq" run $M --db "$tmp/x.db" --method sq --wbits 8 --abits 8 --alpha search --alpha-grid 0.3:0.1:0.8 --threads 2 >/dev/null
"$masq" run $M --db "$tmp/x.db" --method mas --wbits 4 --abits 8 --set 1.qkv.alpha.vision=0.7 --threads 2 >/dev/null
"$masq" run $M --db "$tmp/x.db" --method mas-cmc --wbits 4 --abits 6 --rank 16 --set '*'.o.rank=0.5 --threads 2 >/dev/null
i=1
for name in sq-w8a8-search mas-w4a8 mas-cmc-w4a6; do
	"$masq" sessions dump $i --db "$tmp/x.db" | sed "s|$tmp/demo|DEMO|g" > "$here/$name.sql"
	i=$((i + 1))
done
echo "wrote $(ls "$here"/*.sql | wc -l) examples to $here"
