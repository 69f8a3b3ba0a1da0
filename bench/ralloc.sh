#!/bin/sh
# bench/ralloc.sh: the rank budget against the uniform ratio at the same
# bytes, on a demo preset (small by default; BENCH_PRESET=3b for the
# Qwen2.5-VL-3B layer shapes).  For each budget: the bytes spent, the total
# whitened error (relative objective, dB of the error without compensation)
# of the allocation and of the uniform ratio at the bytes the allocation
# spent, and the model's last-layer SQNR per modality with the allocation
# and with the uniform whole-number rank whose bytes come nearest.
#
#	MASQ=<build>/src/masq sh bench/ralloc.sh <abs_builddir> [BUDGET ...]
#
# Closed form (--epochs 0), W4A8, mas-cmc.  Exits non-zero only when
# something could not run; prints "never worse: yes|no" at the end.

set -u
if [ $# -lt 1 ]; then
	echo "usage: MASQ=<build>/src/masq sh bench/ralloc.sh BUILDDIR [BUDGET ...]" >&2
	exit 2
fi
builddir=$1
shift
masq=${MASQ:-$builddir/src/masq}
work=$builddir/bench-work
preset=${BENCH_PRESET:-small}
py=${PYTHON3:-python3}
[ $# -gt 0 ] || set -- 250kB 500kB 1MB 2MB 4MB
mkdir -p "$work" || exit 2
if [ ! -f "$work/$preset/calib.safetensors" ]; then
	rm -rf "$work/$preset"
	"$masq" demo "$work/$preset" --preset "$preset" >/dev/null || exit 1
fi
M="--model $work/$preset/model --calib $work/$preset/calib.safetensors --method mas-cmc --epochs 0 --no-db --json"
echo "bench/ralloc.sh: $preset preset, W4A8 mas-cmc closed form; OpenBLAS $(OPENBLAS_VERBOSE=2 "$masq" --version 2>&1 | sed -n 's/.*Core: //p' | head -n 1)"
printf '%-8s %10s %10s %10s   %-24s %-24s %s\n' budget spent "alloc dB" "unif dB" "model SQNR t/v/a (alloc)" "(uniform rank r)" "r"
ok=yes
"$masq" run $M --rank 2 > "$work/ralloc-unit.json" 2>/dev/null || { echo "run --rank 2 failed" >&2; exit 1; }
for b in "$@"; do
	"$masq" run $M --rank-budget "$b" > "$work/ralloc-$b.json" 2>/dev/null || { echo "run --rank-budget $b failed" >&2; exit 1; }
	# the uniform whole-number rank whose bytes come nearest the allocation's
	r=$("$py" -c "
import json, sys
a = json.load(open(sys.argv[1]))['rank_allocation']; unit = json.load(open(sys.argv[2]))['cost']['cmc_bytes'] / 2
print(max(2, round(a['bytes'] / unit)))
" "$work/ralloc-$b.json" "$work/ralloc-unit.json") || exit 1
	"$masq" run $M --rank "$r" > "$work/ralloc-u$r.json" 2>/dev/null || { echo "run --rank $r failed" >&2; exit 1; }
	"$py" - "$work/ralloc-$b.json" "$work/ralloc-u$r.json" "$b" "$r" <<'EOF' || ok=no
import json, sys
a = json.load(open(sys.argv[1])); u = json.load(open(sys.argv[2])); r = a["rank_allocation"]
sq = lambda d: "%.2f/%.2f/%.2f" % tuple(d["summary"]["sqnr_db"][m] for m in ("text", "vision", "audio"))
print("%-8s %10d %10.2f %10.2f   %-24s %-24s %s (%d B)" % (sys.argv[3], r["bytes"], r["error_db"], r["uniform"]["error_db"],
      sq(a), sq(u), sys.argv[4], u["cost"]["cmc_bytes"]))
sys.exit(0 if r["error_db"] <= r["uniform"]["error_db"] else 1)
EOF
done
echo "never worse: $ok"
