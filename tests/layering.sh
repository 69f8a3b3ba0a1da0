#!/bin/sh
# The house rules a grep can see (DESIGN.md, STYLE.md): which floor may
# include what, rounding in core/, and CI running the README's command.
. "$srcdir/lib.sh"
cd "$top_srcdir" || exit 99

inc() { grep -rlE "#include *[<\"]($1)" $2 2>/dev/null; }
bad=$(inc 'n?curses|ncursesw/' "core sessions src/cmd_*.c")
check "curses only in ui/ (and src/main.c): ${bad:-none}" test -z "$bad"
bad=$(inc 'sqlite3' "core ui")
check "sqlite3 only in sessions/: ${bad:-none}" test -z "$bad"
bad=$(grep -rlE '#include *<mpi\.h>' core sessions ui src 2>/dev/null | grep -v '^core/dist\.c$')
check "mpi.h only in core/dist.c: ${bad:-none}" test -z "$bad"
bad=$(inc 'cblas|lapacke|core/blas.h' "ui sessions src")
check "BLAS/LAPACK only in core/: ${bad:-none}" test -z "$bad"
bad=$(grep -rlE '#include *"(sessions|ui|src)/' core 2>/dev/null)
check "core/ includes no floor above it: ${bad:-none}" test -z "$bad"
bad=$(grep -rlE '#include *"(ui|src)/' sessions 2>/dev/null)
check "sessions/ includes no floor above it: ${bad:-none}" test -z "$bad"
bad=$(grep -rlE '#include *"src/' ui 2>/dev/null)
check "ui/ includes no floor above it: ${bad:-none}" test -z "$bad"
bad=$(grep -rnE '\broundf? *\(' core | grep -v '^\s*/[/*]' | head -n 3)
check "no round()/roundf() in core/ (quantizers round half to even): ${bad:-none}" test -z "$bad"
bad=$(grep -rLE '^#include "config.h"' core/*.c src/*.c sessions/*.c ui/*.c 2>/dev/null)
check "every .c file includes config.h: ${bad:-none}" test -z "$bad"

# CI runs the README's test command verbatim.
cmd=$(sed -n '/^## Quick start/,/^## /p' README.md | grep -E '^ *sh tools/install-deps' | sed -n 2p | sed 's/^ *//')
check "README's Quick start has the test command" test -n "$cmd"
check ".ci/run runs it verbatim" grep -qxF "$cmd" .ci/run
done_testing
