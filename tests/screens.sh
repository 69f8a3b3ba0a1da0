#!/bin/sh
# Screen tests of the workbench (ui/).  tests/tui_screens plays a key script
# on the tiny demo with curses started on /dev/null (TERM xterm, 80x24, a
# UTF-8 locale) and dumps the screen after every step; the dumps, with
# timings masked, must match the goldens in tests/screens/.  The goldens are
# made on one machine and checked on others: the driver runs with two BLAS
# threads and, where the CPU has AVX2, OpenBLAS's Haswell kernels (the same
# bits on AVX2 and AVX-512 machines alike), and a dump that is not the
# golden byte for byte must still match it within one unit of every
# printed decimal (tests/screen_cmp.py), for a BLAS that draws the last
# bits otherwise.  The session the script recorded must replay headlessly.
#
#   UPDATE_GOLDEN=1 make check TESTS=tests/screens.sh   rewrites the goldens
. "$srcdir/lib.sh"
drv="$builddir/tui_screens"
[ -x "$drv" ] || skip_all "tests/tui_screens is not built"
w=$(workdir screens)
cd "$w" || exit 99

"$MASQ" demo demo --preset tiny >/dev/null 2>demo.err || { cat demo.err; exit 99; }
mkdir out
kernels=
grep -q '\<avx2\>' /proc/cpuinfo 2>/dev/null && kernels=Haswell
LANG=C.UTF-8 LC_ALL=C.UTF-8 OPENBLAS_NUM_THREADS=2 env ${kernels:+OPENBLAS_CORETYPE=$kernels} "$drv" --model demo/model --calib demo/calib.safetensors --db tui.db --out out \
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
	elif [ -n "${PYTHON3:-}" ] && "$PYTHON3" "$srcdir/screen_cmp.py" "$golden/$name" "masked-$name" 2> "cmp-$name"; then
		ok "screen $name matches its golden within a unit of the last digit"
	else
		not_ok "screen $name matches its golden"
		[ -s "cmp-$name" ] && sed 's/^/# /' "cmp-$name"
		sed 's/^/# /' "diff-$name" | head -n 40
	fi
done
# the comparison itself: a unit of the last digit passes, two do not, nor
# does other text
if [ -n "${PYTHON3:-}" ]; then
	printf ' q_proj      26.06  39.71 \342\226\210\342\226\210\342\226\210 x\n' > cmp-a.txt
	printf ' q_proj      26.07  39.70 \342\226\210\342\226\210 x\n' > cmp-b.txt
	printf ' q_proj      26.08  39.71 \342\226\210\342\226\210\342\226\210 x\n' > cmp-c.txt
	printf ' k_proj      26.06  39.71 \342\226\210\342\226\210\342\226\210 x\n' > cmp-d.txt
	check "screen_cmp.py: one unit of the last digit and one bar cell pass" "$PYTHON3" "$srcdir/screen_cmp.py" cmp-a.txt cmp-b.txt
	check "screen_cmp.py: two units fail" sh -c "! '$PYTHON3' '$srcdir/screen_cmp.py' cmp-a.txt cmp-c.txt 2>/dev/null"
	check "screen_cmp.py: other text fails" sh -c "! '$PYTHON3' '$srcdir/screen_cmp.py' cmp-a.txt cmp-d.txt 2>/dev/null"
fi
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
