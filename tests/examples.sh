#!/bin/sh
# The example sessions in sessions/examples replay on the demo they were
# recorded on (masq sessions load, then masq replay with the demo's paths).
. "$srcdir/lib.sh"
w=$(workdir examples)
"$MASQ" demo "$w/demo" --preset tiny >/dev/null
set -- "$top_srcdir"/sessions/examples/*.sql
check "there are at least three example sessions" test $# -ge 3
for f in "$@"; do
	ex=$(basename "$f" .sql)
	db="$w/$ex.db"
	sed "s|DEMO|$w/demo|g" "$f" > "$w/$ex.sql"
	check "$ex: loads into a fresh database" sh -c "'$MASQ' sessions load '$w/$ex.sql' --db '$db' >/dev/null"
	"$MASQ" replay --db "$db" > "$w/$ex.out" 2> "$w/$ex.err"; rc=$?
	if [ $rc -eq 0 ]; then ok "$ex: replays, every result matches"
	else not_ok "$ex: replays, every result matches (exit $rc; regenerate with sessions/examples/make-examples.sh if the numerics changed on purpose)"; sed 's/^/# /' "$w/$ex.err"; fi
done
done_testing
