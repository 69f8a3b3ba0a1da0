#!/bin/sh
# The documentation runs: every walk-through of masq-workflow(7) and every
# example of masq(1) is extracted from the page source and run against a
# tiny demo; every command of the session command table is documented in
# masq(1) and masq-session(5).  (tests/man.sh lints the pages and checks
# them against `masq --help`.)
#
# A walk-through is each literal block preceded by `.\" workflow: NAME`;
# the blocks of one NAME, in order, make one script, run with `sh -e` in an
# empty directory with DEMO naming the demo and masq first on PATH.  An
# example of masq(1) is a literal block of its EXAMPLES section; one
# preceded by `.\" example: skip (REASON)` is not run.  mdoc escapes are
# turned back into shell (\e \(aq \(dq \- \&), and --preset small or 3b
# into tiny, so that the suite stays fast.
. "$srcdir/lib.sh"
man="$top_srcdir/man"
w=$(workdir docs)

# masq (and Debian's python3, when the suite names one) first on PATH; the
# default demo and database inside the work directory.
mkdir -p "$w/bin" || exit 99
ln -s "$MASQ" "$w/bin/masq" || exit 99
if [ -n "${PYTHON3:-}" ] && [ -x "$PYTHON3" ]; then
	ln -s "$PYTHON3" "$w/bin/python3" || exit 99
fi
PATH="$w/bin:$PATH"
MASQ_DEMO_DIR="$w/cache"
DEMO="$w/demo"
export PATH MASQ_DEMO_DIR DEMO
# the mpirun walk-through, where CI runs it: as root, two processes on any core count
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
unset MASQ_DB
"$MASQ" demo "$DEMO" --preset tiny > /dev/null || { echo "Bail out! masq demo failed"; exit 99; }
have_timeout=0
command -v timeout > /dev/null 2>&1 && have_timeout=1

# unescape: mdoc literal text on stdin, shell on stdout.
unescape() {
	awk '{
		gsub(/\\e/, "\001")
		gsub(/\\\(aq/, "\047")
		gsub(/\\\(dq/, "\"")
		gsub(/\\-/, "-")
		gsub(/\\&/, "")
		print
	}' | tr '\001' '\\' | sed -E 's/--preset (small|3b)/--preset tiny/g'
}

# extract PAGE MODE DIR: write literal blocks of PAGE into DIR.  In MODE
# "workflow", blocks marked `.\" workflow: NAME`
# go to DIR/NAME.sh (appended, in page order); in "example", each block of
# the EXAMPLES section goes to DIR/example-N.sh, or DIR/example-N.skip when
# marked `.\" example: skip`.
extract() {
	awk -v mode="$2" -v dir="$3" '
	function flush() { if (out != "") close(out); out = "" }
	mode == "example" && /^\.Sh / { inex = ($0 ~ /^\.Sh EXAMPLES/); next }
	/^\.\\" workflow: / && mode == "workflow" {
		name = $0; sub(/^\.\\" workflow: */, "", name); sub(/ .*/, "", name)
		pending = name; next
	}
	/^\.\\" example: skip/ && mode == "example" { skip = 1; next }
	/^\.Bd -literal/ {
		if (mode == "workflow" && pending != "") {
			out = dir "/" pending ".sh"; inblock = 1; pending = ""
		} else if (mode == "example" && inex) {
			n++; out = dir "/example-" n (skip ? ".skip" : ".sh"); inblock = 1; skip = 0
		}
		next
	}
	/^\.Ed/ { if (inblock) { inblock = 0; flush() } next }
	inblock && /^\.\\"/ { next }
	inblock { print >> out }
	' "$1"
}

# run_script NAME FILE DIR: run FILE with sh -e in the empty directory DIR;
# its output goes to DIR.log, shown when it fails.  A script that needs
# sqlite3 or python3 where there is none is skipped.
run_script() {
	mkdir -p "$3" || return 1
	unescape < "$2" > "$3.sh"
	for tool in sqlite3 python3; do
		if grep -q "$tool " "$3.sh" && ! command -v $tool > /dev/null 2>&1; then
			ok "# SKIP $1: no $tool"
			return 0
		fi
	done
	# mpirun needs a build configured --with-mpi (CI's MPI flavour runs it)
	if grep -q "mpirun " "$3.sh" && ! { command -v mpirun > /dev/null 2>&1 &&
	    "$MASQ" --version | grep -q "built with.*MPI"; }; then
		ok "# SKIP $1: masq is built without --with-mpi, or there is no mpirun"
		return 0
	fi
	if [ $have_timeout -eq 1 ]; then
		(cd "$3" && timeout 120 sh -e -x "$3.sh") < /dev/null > "$3.log" 2>&1
	else
		(cd "$3" && sh -e -x "$3.sh") < /dev/null > "$3.log" 2>&1
	fi
	rc=$?
	if [ $rc -eq 0 ]; then
		ok "$1 runs (exit 0)"
	else
		not_ok "$1 runs (exit $rc)"
		tail -n 25 "$3.log" | sed 's/^/# /'
	fi
}

# The walk-throughs of masq-workflow(7).
mkdir -p "$w/workflow" || exit 99
extract "$man/masq-workflow.7" workflow "$w/workflow"
set -- "$w"/workflow/*.sh
check "masq-workflow(7) has walk-throughs" test -f "$1"
for f in "$@"; do
	[ -f "$f" ] || continue
	name=$(basename "$f" .sh)
	run_script "masq-workflow(7) '$name'" "$f" "$w/run-workflow-$name"
done
for want in first-look tune rank ci resume vllm masquant compare; do
	check "masq-workflow(7) has the walk-through '$want'" test -f "$w/workflow/$want.sh"
done

# The EXAMPLES of masq(1).
mkdir -p "$w/example" || exit 99
extract "$man/masq.1" example "$w/example"
i=1
while [ -f "$w/example/example-$i.sh" ] || [ -f "$w/example/example-$i.skip" ]; do
	if [ -f "$w/example/example-$i.skip" ]; then
		if grep -qE '~/models|masq tui' "$w/example/example-$i.skip"; then
			ok "# SKIP masq(1) example $i: marked as needing a real checkpoint or a terminal"
		else
			not_ok "masq(1) example $i is marked skip but needs neither a real checkpoint nor a terminal"
		fi
	elif grep -q '~/models' "$w/example/example-$i.sh"; then
		not_ok "masq(1) example $i uses a real checkpoint: mark it '.\\\" example: skip (needs a real checkpoint)'"
	else
		run_script "masq(1) example $i" "$w/example/example-$i.sh" "$w/run-example-$i"
	fi
	i=$((i + 1))
done
check "masq(1) has examples" test $i -gt 1

# The session command table, in masq(1) and masq-session(5).
table="$builddir/cmdtable"
if [ -x "$table" ] && "$table" --list > "$w/cmds.txt" 2> "$w/cmds.err"; then
	check "the command table lists commands" test -s "$w/cmds.txt"
	cut -f 1 "$w/cmds.txt" > "$w/names.txt"
	while IFS= read -r c; do
		for page in masq.1 masq-session.5; do
			check "$page documents the session command '$c'" \
			    grep -qE "^\.It (Ic|Cm) $c( |$)" "$man/$page"
		done
	done < "$w/names.txt"
	# The list in the pages is the one the table generates, word for word.
	if "$table" --mdoc > "$w/cmds.mdoc"; then
		gen=$(tr '\n' '\001' < "$w/cmds.mdoc")
		for page in masq.1 masq-session.5; do
			text=$(tr '\n' '\001' < "$man/$page")
			case $text in
			*"$gen"*) ok "$page: the command list is the one the table generates" ;;
			*) not_ok "$page: the command list is the one the table generates (paste tests/cmdtable --mdoc)" ;;
			esac
		done
	else
		not_ok "tests/cmdtable --mdoc runs"
	fi
else
	ok "# SKIP tests/cmdtable is not built: the command table is not checked"
fi

# The workbench's keys, in masq(1): the list its key table generates.
keys="$builddir/keytable"
if [ -x "$keys" ] && "$keys" --mdoc > "$w/keys.mdoc" 2> "$w/keys.err"; then
	gen=$(tr '\n' '\001' < "$w/keys.mdoc")
	text=$(tr '\n' '\001' < "$man/masq.1")
	case $text in
	*"$gen"*) ok "masq.1: the key list is the one the key table generates" ;;
	*) not_ok "masq.1: the key list is the one the key table generates (paste tests/keytable --mdoc)" ;;
	esac
else
	not_ok "tests/keytable --mdoc runs"
fi
done_testing
