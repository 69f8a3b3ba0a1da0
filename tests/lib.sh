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

# mpi_setup: skip the whole script, saying why, unless masq was built
# --with-mpi and mpirun is installed; then what mpirun needs on these
# machines (CI runs as root; any core count: oversubscribed).  run_np NP
# CMD...: mpirun -np NP --bind-to none (each rank gets every core and the
# BLAS threads its command asks for) under a 60 s limit, so a hang fails.
mpi_setup() {
	if ! "$MASQ" --version | grep -q "built with.*MPI"; then
		skip_all "masq was built without --with-mpi (configure --with-mpi builds the MPI flavour)"
	fi
	mpirun=$(command -v mpirun) || skip_all "mpirun is not installed (Debian: openmpi-bin)"
	export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
}
run_np() { np=$1; shift; timeout 60 "$mpirun" -np "$np" --bind-to none "$@"; }
