#!/bin/sh
# The command line: help, version, usage errors and their exit status, and
# the demo -> inspect -> forward path on the tiny preset.
. "$srcdir/lib.sh"
w=$(workdir cli)
export MASQ_DEMO_DIR="$w/cache" MASQ_DB="$w/cli.db"

out=$("$MASQ" --help); rc=$?
check "--help exits 0" test $rc -eq 0
for c in demo inspect forward; do
	check "--help lists '$c'" sh -c "echo \"\$1\" | grep -q \"masq $c\"" - "$out"
done
check "--version prints the version" sh -c "'$MASQ' --version | grep -qE '^masq [0-9]+\.[0-9]+'"
for c in demo inspect forward; do
	check "masq $c --help exits 0 with its usage" sh -c "'$MASQ' $c --help | grep -q 'usage: masq $c'"
done

expect() {	# expect STATUS NEEDLE name -- cmd...
	want=$1 needle=$2 name=$3; shift 4
	"$@" >"$w/out" 2>"$w/err"; got=$?
	if [ "$got" -eq "$want" ] && grep -q -- "$needle" "$w/err"; then ok "$name"
	else not_ok "$name"; diag "status $got (want $want); stderr:"; sed 's/^/#   /' "$w/err"; fi
}
expect 2 "unknown command 'frobnicate'" "unknown command" -- "$MASQ" frobnicate
expect 2 "unknown preset 'huge'" "unknown preset" -- "$MASQ" demo "$w/x" --preset huge
expect 2 "expected one directory" "demo without a directory" -- "$MASQ" demo
expect 2 "--seed must be an integer" "bad seed" -- "$MASQ" demo "$w/x" --seed banana
expect 2 "no such file" "inspect of a missing path" -- "$MASQ" inspect "$w/nope"
expect 2 "go together" "--model without --calib" -- "$MASQ" forward --model "$w/x"
expect 2 "--threads must be" "bad --threads" -- "$MASQ" forward --threads 0
expect 2 "unknown or incomplete option" "unknown option" -- "$MASQ" forward --frobnicate
expect 2 "config.json" "a directory that is not a model" -- "$MASQ" inspect "$w"

check "demo tiny" "$MASQ" demo "$w/d" --preset tiny
check "inspect the model" sh -c "'$MASQ' inspect '$w/d/model' > '$w/im'"
check "inspect names the architecture" grep -q 'Qwen2_5_VLForConditionalGeneration' "$w/im"
check "inspect --json parses" sh -c "'$MASQ' inspect --json '$w/d/model' | '${PYTHON3:-python3}' -c 'import json,sys; d=json.load(sys.stdin); assert d[\"layers\"]==2 and d[\"hidden_size\"]==64 and d[\"mrope_section\"]==[2,3,3], d'"
check "inspect the calibration set" sh -c "'$MASQ' inspect '$w/d/calib.safetensors' | grep -q 'vision'"

check "forward writes every layer's output" \
	"$MASQ" forward --model "$w/d/model" --calib "$w/d/calib.safetensors" --out "$w/h.safetensors" --threads 1
check "forward leaves no temporary file" sh -c "! ls '$w' | grep -q '\.tmp'"
"$MASQ" inspect --json "$w/h.safetensors" > "$w/h.json"
check "the output holds layers.0.output and layers.1.output, F32 [tokens, 64]" \
	"${PYTHON3:-python3}" -c "
import json,sys
d=json.load(open('$w/h.json'))
t={x['name']:x for x in d['tensors']}
assert set(t)=={'layers.0.output','layers.1.output'}, t.keys()
for x in t.values(): assert x['dtype']=='F32' and x['shape'][1]==64, x
"
check "forward --json parses and reports both layers" sh -c "'$MASQ' forward --json --model '$w/d/model' --calib '$w/d/calib.safetensors' | '${PYTHON3:-python3}' -c 'import json,sys; d=json.load(sys.stdin); assert len(d[\"layers\"])==2'"
check "same threads, same bytes: forward is deterministic" sh -c "
	'$MASQ' forward --model '$w/d/model' --calib '$w/d/calib.safetensors' --out '$w/h2.safetensors' --threads 1 >/dev/null &&
	cmp -s '$w/h.safetensors' '$w/h2.safetensors'"

# The main job with no arguments: the demo is written once to MASQ_DEMO_DIR.
check "masq with no arguments runs the main job on the demo" sh -c "'$MASQ' > '$w/main.out' 2>&1"
check "the main job prints a per-layer table" grep -qE '^1 +\| +[0-9]+\.[0-9]{2} ' "$w/main.out"
check "the demo is cached for the next run" sh -c "out=\$('$MASQ' 2>&1) && ! echo \"\$out\" | grep -q 'writing the embedded demo'"
# A FIFO in place of a file is refused at once, never waited on (exit 2)
if command -v mkfifo > /dev/null && command -v timeout > /dev/null; then
	mkdir -p "$w/fifo" && cp "$w/d/model/"* "$w/fifo/" && rm -f "$w/fifo/config.json" && mkfifo "$w/fifo/config.json"
	timeout 20 "$MASQ" inspect "$w/fifo" > /dev/null 2> "$w/fifo.err"; rc=$?
	check "a FIFO as config.json is refused, not waited on" sh -c "test $rc -eq 2 && grep -q 'config.json: not a regular file (a FIFO)' '$w/fifo.err'"
	mkfifo "$w/calib.fifo"
	timeout 20 "$MASQ" inspect "$w/calib.fifo" > /dev/null 2> "$w/fifo2.err"; rc=$?
	check "a FIFO as a calibration set is refused" sh -c "test $rc -eq 2 && grep -q 'not a regular file (a FIFO)' '$w/fifo2.err'"
	timeout 20 "$MASQ" run --model "$w/d/model" --calib "$w/calib.fifo" --no-db > /dev/null 2> "$w/fifo3.err"; rc=$?
	check "... by run too" sh -c "test $rc -eq 2 && grep -q 'not a regular file (a FIFO)' '$w/fifo3.err'"
	mkfifo "$w/db.fifo"
	timeout 20 "$MASQ" sessions list --db "$w/db.fifo" > /dev/null 2> "$w/fifo4.err"; rc=$?
	check "a FIFO as the session database is refused" sh -c "test $rc -eq 2 && grep -q 'not a regular file' '$w/fifo4.err'"
fi
# Symbolic links: within the model directory or into a Hugging Face cache's
# blobs/ they are followed; out of it they are refused, naming both ends,
# unless MASQ_FOLLOW_SYMLINKS=1.
mkdir -p "$w/out-of-dir" "$w/elsewhere" && cp "$w/d/model/"* "$w/out-of-dir/" &&
	mv "$w/out-of-dir/model.safetensors" "$w/elsewhere/weights.safetensors" &&
	ln -s "$w/elsewhere/weights.safetensors" "$w/out-of-dir/model.safetensors"
expect 2 "model.safetensors is a symbolic link to $w/elsewhere/weights.safetensors, outside the model directory" \
	"a model.safetensors linked out of the model directory is refused, naming the target" -- "$MASQ" inspect "$w/out-of-dir"
check "... and followed with MASQ_FOLLOW_SYMLINKS=1" env MASQ_FOLLOW_SYMLINKS=1 "$MASQ" inspect "$w/out-of-dir"
rm -f "$w/out-of-dir/model.safetensors" && ln -s /etc/passwd "$w/out-of-dir/model.safetensors"
expect 2 "is a symbolic link to /etc/passwd, outside the model directory" \
	"a weights file linked to /etc/passwd is refused as a link, its bytes never read" -- "$MASQ" inspect "$w/out-of-dir"
hf=$w/hub/models--demo/snapshots/0123abc
mkdir -p "$hf" "$w/hub/models--demo/blobs"
for f in "$w/d/model/"*; do
	b=$(cksum < "$f" | cut -d' ' -f1)
	cp "$f" "$w/hub/models--demo/blobs/$b" && ln -s "../../blobs/$b" "$hf/$(basename "$f")"
done
check "a Hugging Face cache snapshot (every file a link into blobs/) opens" "$MASQ" inspect "$hf"
cp -r "$w/d/model" "$w/tok-link" && ln -s /etc/passwd "$w/tok-link/tokenizer.json"
expect 2 "tokenizer.json is a symbolic link to /etc/passwd" "an export refuses to copy a file linked out of the model" -- \
	sh -c "'$MASQ' run --model '$w/tok-link' --calib '$w/d/calib.safetensors' --method rtn --db '$w/tl.db' >/dev/null 2>&1;
	'$MASQ' export --db '$w/tl.db' --format fake --out '$w/tl-export'"
check "... and writes nothing" test ! -e "$w/tl-export"
done_testing
