#!/bin/sh
# Screen tests of the workbench (ui/).  tests/tui_screens plays a key script
# on the tiny demo with curses started on /dev/null (TERM xterm, 80x24, a
# UTF-8 locale) and dumps the screen after every step; the dumps, with
# timings masked, must equal the goldens in tests/screens/.  The session the
# script recorded must replay headlessly.
#
#   UPDATE_GOLDEN=1 make check TESTS=tests/screens.sh   rewrites the goldens
. "$srcdir/lib.sh"
drv="$builddir/tui_screens"
[ -x "$drv" ] || skip_all "tests/tui_screens is not built"
w=$(workdir screens)
cd "$w" || exit 99

"$MASQ" demo demo --preset tiny >/dev/null 2>demo.err || { cat demo.err; exit 99; }
mkdir out
LANG=C.UTF-8 LC_ALL=C.UTF-8 "$drv" --model demo/model --calib demo/calib.safetensors --db tui.db --out out \
	> driver.tap 2> driver.err
rc=$?
tap_include driver.tap
check "the driver exits 0 (status $rc)" test $rc -eq 0
[ -s driver.err ] && sed 's/^/# driver: /' driver.err | head -n 20

# Timings vary, so do absolute paths: mask them.
mask() {
	sed -E -e 's/ +[0-9]+\.[0-9]+(s|ms)\b/ ~\1/g' -e 's/[0-9]+\.[0-9]+(s|ms)\b/~\1/g' -e "s|$w/||g" "$1"
}
golden="$srcdir/screens"
for f in out/*.txt; do
	name=${f#out/}
	mask "$f" > "masked-$name"
	if [ -n "${UPDATE_GOLDEN:-}" ]; then
		cp "masked-$name" "$golden/$name" && ok "golden $name written"
	elif [ ! -f "$golden/$name" ]; then
		not_ok "screen $name has a golden (UPDATE_GOLDEN=1 writes it)"
	elif diff -u "$golden/$name" "masked-$name" > "diff-$name"; then
		ok "screen $name matches its golden"
	else
		not_ok "screen $name matches its golden"
		sed 's/^/# /' "diff-$name" | head -n 40
	fi
done
for g in "$golden"/*.txt; do
	[ -f "out/${g##*/}" ] || not_ok "golden ${g##*/} was produced by the script (stale golden?)"
done

# The help screen is generated from the command table: every key it shows
# is documented in masq(1) as ".It Ic KEY" followed by ".Cm COMMAND".
man_pairs=$(awk '/^\.It Ic / { k = $3; next } k != "" && /^\.Cm / { print k, $2 } { k = "" }' "$top_srcdir/man/masq.1")
help_pairs=$(sed -n 's/^ \([a-z]\)\*\{0,1\}  *\([a-z][a-z-]*\)  .*/\1 \2/p' out/01-help.txt)
check "the help screen lists the table's keys" test "$(echo "$help_pairs" | wc -l)" -ge 8
for pair in $(echo "$help_pairs" | tr ' ' '='); do
	check "masq(1) documents key ${pair%%=*} for ${pair#*=}" sh -c "echo '$man_pairs' | grep -qxF '${pair%%=*} ${pair#*=}'"
done

check "the session driven through the TUI replays headlessly (exit 0)" \
	sh -c "'$MASQ' replay --db tui.db --session 1 > replay.out 2>&1"
[ -s replay.out ] && sed 's/^/# /' replay.out | tail -n 3
"$MASQ" tui --db refused.db < /dev/null > notty.out 2> notty.err; rc=$?
check "masq tui without a terminal is a usage error (exit $rc)" test $rc -eq 2
check "it says so" grep -q 'needs a terminal' notty.err
check "and records nothing" test ! -e refused.db
done_testing
