# lib.sh: TAP helpers for the shell tests.  Source it, call ok/not_ok/check,
# and end with `done_testing`.
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
# check "name" cmd args...: ok when the command succeeds.
check() { name=$1; shift; if "$@"; then ok "$name"; else not_ok "$name"; fi; }
diag() { echo "# $*"; }
skip_all() { echo "1..0 # SKIP $*"; exit 0; }
done_testing() { echo "1..$n"; [ "$failed" -eq 0 ]; }
# expect NEEDLE NAME -- CMD...: CMD exits 2 (refused) with NEEDLE on stderr
# (its output in $w/out and $w/err).
expect() {
	needle=$1 name=$2; shift 3
	"$@" >"$w/out" 2>"$w/err"; got=$?
	if [ "$got" -eq 2 ] && grep -q -- "$needle" "$w/err"; then ok "$name"
	else not_ok "$name"; diag "status $got; stderr:"; sed 's/^/#   /' "$w/err"; fi
}
# A fresh work directory for this test under $builddir/work.
workdir() {
	w="${builddir:-.}/work/$1"
	rm -rf "$w" && mkdir -p "$w" && echo "$w"
}
: "${MASQ:?MASQ must point at the masq binary (run through make check)}"
# tap_include FILE: pass unnumbered "ok - ..." lines of another program
# through, counting them.
tap_include() {
	while IFS= read -r line; do
		case $line in
		"ok "*) n=$((n + 1)); echo "$line" ;;
		"not ok "*) n=$((n + 1)); failed=$((failed + 1)); echo "$line" ;;
		*) echo "# ${line#\# }" ;;
		esac
	done < "$1"
}
# tap_run NAME FILE CMD...: run a checker that prints unnumbered TAP into
# FILE, pass its lines through, and fail when it exits non-zero or printed
# no test at all (a crashed checker must not pass silently).
tap_run() {
	tr_name=$1 tr_file=$2
	shift 2
	"$@" > "$tr_file" 2>&1
	tr_rc=$?
	tap_include "$tr_file"
	if [ "$tr_rc" -ne 0 ] || ! grep -q '^\(not \)\?ok ' "$tr_file"; then
		not_ok "$tr_name: the checker exited $tr_rc or printed no test"
	fi
}
