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
