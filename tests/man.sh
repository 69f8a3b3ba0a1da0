#!/bin/sh
# The man pages: lint-clean, and true to `masq --help` (every command and
# every long option it lists is documented in masq(1)).
. "$srcdir/lib.sh"
man="$top_srcdir/man"

for page in "$man"/*.[1-9]; do
	name=$(basename "$page")
	if [ -n "${MANDOC:-}" ] && [ -x "$MANDOC" ]; then
		out=$("$MANDOC" -Tlint -Wwarning "$page" 2>&1)
		check "mandoc -Tlint: $name is clean${out:+: $out}" test -z "$out"
	elif [ -n "${GROFF:-}" ] && [ -x "$GROFF" ]; then
		out=$("$GROFF" -mdoc -ww -z "$page" 2>&1)
		check "groff -ww: $name is clean${out:+: $out}" test -z "$out"
	else
		ok "# SKIP no mandoc or groff to lint $name"
	fi
done

help=$("$MASQ" --help)
cmds=$(echo "$help" | sed -n 's/^  masq \([a-z-]*\).*/\1/p')
check "--help lists commands" test -n "$cmds"
for c in $cmds; do
	check "masq(1) documents the command '$c'" grep -qE "^\.Cm $c( |$)" "$man/masq.1"
done
opts=$(echo "$help" | grep -oE -- '--[a-z][a-z-]*' | sort -u)
for o in $opts; do
	f=${o#--}
	check "masq(1) documents the option $o" grep -qE "^\.(It|Op|Oo|Nm).*Fl -$f( |$)|Fl -$f( |$)" "$man/masq.1"
done
done_testing
