#!/bin/sh
# Smoke test of the real binary in tmux: masq tui on the tiny demo in an
# 80x24 pane, keys sent with send-keys, the screen read with capture-pane;
# every wait polls the pane for the text it expects.  The session recorded
# through the TUI must replay headlessly.  Skipped without tmux ($TMUX_BIN).
. "$srcdir/lib.sh"
tmux=${TMUX_BIN:-}
{ [ -n "$tmux" ] && [ -x "$tmux" ]; } || skip_all "no tmux (TMUX_BIN is empty)"
w=$(workdir tui_tmux)
cd "$w" || exit 99
"$MASQ" demo demo --preset tiny >/dev/null 2>demo.err || { cat demo.err; exit 99; }

sock="$w/tmux.sock"
T() { "$tmux" -S "$sock" -f /dev/null "$@"; }
cleanup() { T kill-server 2>/dev/null; }
trap cleanup EXIT
# A session that lives as long as the test: killing the last session stops
# the tmux server, and a new-session right after may reach it while it is
# exiting ("server exited unexpectedly"), however fast or slow the machine.
T new-session -d -s keep -x 80 -y 24 cat || { echo "not ok - tmux starts"; exit 99; }

# start NAME RCFILE ARGS...: masq tui ARGS in a detached 80x24 session NAME
start() {
	name=$1 rcf=$2
	shift 2
	T new-session -d -s "$name" -x 80 -y 24 \
		"env TERM=screen LANG=C.UTF-8 LC_ALL=C.UTF-8 '$MASQ' tui $* 2>>stderr.txt; echo \$? > $rcf; sleep 60"
}
# wait_for SESSION TEXT [SECONDS]: poll the pane (up to SECONDS, 30 by
# default) until TEXT appears.
wait_for() {
	i=0
	while [ $i -lt $((${3:-30} * 10)) ]; do
		T capture-pane -p -t "$1" > screen.txt 2>/dev/null && grep -qF -- "$2" screen.txt && return 0
		i=$((i + 1))
		sleep 0.1
	done
	sed 's/^/# screen: /' screen.txt
	return 1
}
# wait_exit RCFILE: poll until the program has written its status.
wait_exit() {
	i=0
	while [ $i -lt 300 ]; do
		[ -s "$1" ] && return 0
		i=$((i + 1))
		sleep 0.1
	done
	return 1
}

start one rc1 --model demo/model --calib demo/calib.safetensors --db tmux.db
check "the layer list appears" wait_for one "pending    mas-cmc"
check "the status line names the session and the database" grep -q "session 1 .* tmux.db" screen.txt
T send-keys -t one c
check "c calibrates layer 0" wait_for one "0 calibrated"
T send-keys -t one Enter
check "Enter opens the layer view" wait_for one "log2|x|"
T send-keys -t one a 0 C-u 2 Enter
check "the alpha prompt refuses 2 (Ctrl-U cleared the 0)" wait_for one "alpha must be in [0, 1], not 2"
T send-keys -t one q x
check "q closes the layer view and x quantizes" wait_for one "0 quantized"
T send-keys -t one n c
check "n commits it and c calibrates layer 1" wait_for one "1 calibrated"
T send-keys -t one Q
check "Q asks: layer 1 is not committed" wait_for one "quit? [y/N]"
T send-keys -t one y
check "y quits" wait_exit rc1
check "masq tui exits 0" test "$(cat rc1 2>/dev/null)" = 0
check "it names the session to replay" grep -q 'session 1 is recorded in tmux.db' stderr.txt
T kill-session -t one

"$MASQ" run --model demo/model --calib demo/calib.safetensors --db tmux.db --epochs 0 --rank 8 >/dev/null 2>>stderr.txt
start two rc2 --db tmux.db --session 1
check "--session resumes after the last committed layer" wait_for two "0 committed"
check "layer 1 is pending again" grep -q "1 pending" screen.txt
T send-keys -t two a
check "a asks before committing the remaining layers" wait_for two "run and commit layer 1 (calibrate"
T send-keys -t two y
check "y runs them" wait_for two "1 committed"
T send-keys -t two f
check "f finishes" wait_for two "finished:"
T send-keys -t two D 2 Enter
check "D 2 compares session 2 with this one" wait_for two "session 2 (a) against session 1 (b)"
check "... the ranks that differ among the rows" grep -q "q_proj rank" screen.txt
T send-keys -t two Escape
check "Esc returns from the diff to the list" wait_for two "x quant  n next"
T send-keys -t two e
check "e opens the export dialog" wait_for two "the directory"
T send-keys -t two o u t
check "typing replaces the proposed directory" wait_for two "directory: out"
T send-keys -t two C-u t y p e d Enter
check "Ctrl-U clears it; Enter writes the export where typed" wait_for two "exported"
check "... into typed/" test -d typed
T send-keys -t two q
check "q quits without a question" wait_exit rc2
check "masq tui exits 0 again" test "$(cat rc2 2>/dev/null)" = 0
[ -s stderr.txt ] && sed 's/^/# stderr: /' stderr.txt | head -n 20
check "the session, resumed, replays headlessly (exit 0)" sh -c "'$MASQ' replay --db tmux.db --session 1 > replay.out 2>&1"
[ -s replay.out ] && sed 's/^/# /' replay.out | tail -n 3

# Quitting while a command runs on the worker: the run on the small demo
# (about a second per layer) is still in its first command when Q and y
# arrive; the program waits for that command, exits 0 and leaves no command
# without its result.
"$MASQ" demo small --preset small >/dev/null 2>>stderr.txt || { echo "not ok - the small demo"; exit 99; }
start three rc3 --model small/model --calib small/calib.safetensors --db busy.db
check "the small demo opens" wait_for three "pending    mas-cmc"
T send-keys -t three a y Q y
check "Q then y during a run quits once the command is done" wait_exit rc3
check "masq tui exits 0 after the command" test "$(cat rc3 2>/dev/null)" = 0
"$MASQ" sessions show 1 --db busy.db > busy-events.txt 2>&1
check "the last event recorded is a result" sh -c "tail -n 1 busy-events.txt | grep -q ' result '"
check "and fewer than the 4 layers were committed" sh -c "test \$(grep -c 'result  next-layer' busy-events.txt) -lt 4"
check "that session replays headlessly (exit 0)" sh -c "'$MASQ' replay --db busy.db --session 1 > replay3.out 2>&1"

# g runs up to a typed layer on the worker: layers 0 and 1 of the small
# demo, then the cursor rests at layer 2, pending.
start four rc4 --model small/model --calib small/calib.safetensors --db upto.db
check "the small demo opens again" wait_for four "pending    mas-cmc"
T send-keys -t four g
check "g asks for the layer" wait_for four "up to (not including) layer (1 to 4)"
T send-keys -t four 2 Enter
# (two layers take about 2 s, but about 55 s under ThreadSanitizer on a
# 2-core Zen 5: CI's first step)
check "g 2 runs layers 0 and 1" wait_for four "layers 0 to 1 done: the cursor is at layer 2" 300
check "layer 1 is committed" grep -q "1 committed" screen.txt
check "layer 2 is pending" grep -q "2 pending" screen.txt
T send-keys -t four Q
check "Q quits without a question after the run" wait_exit rc4
check "that session replays headlessly too (exit 0)" sh -c "'$MASQ' replay --db upto.db --session 1 > replay4.out 2>&1"
done_testing
