#!/bin/sh
# demo.sh: `masq demo` writes the same bytes for the same preset and seed,
# other bytes for another seed, files that `masq inspect` reads, a sharded
# model for the small preset, and (checked by demo_check.py with numpy)
# calibration statistics that show the multimodal misalignment: modality
# shares, vision ranges far above text's, channels text or audio dominate,
# Qwen2-VL rope positions, anisotropic embeddings.
. "$srcdir/lib.sh"
w=$(workdir demo)

# quiet CMD...: run CMD with its output in $w/log, shown as comments on failure.
quiet() {
	if "$@" >"$w/log" 2>&1; then
		return 0
	fi
	diag "failed: $*"
	sed 's/^/#   /' "$w/log"
	return 1
}

# same_tree A B: the same file names under A and B, each byte-identical.
same_tree() {
	(cd "$1" && find . -type f | sort) >"$w/list1"
	(cd "$2" && find . -type f | sort) >"$w/list2"
	if ! cmp -s "$w/list1" "$w/list2"; then
		diag "file lists differ"
		return 1
	fi
	while read -r f; do
		if ! cmp -s "$1/$f" "$2/$f"; then
			diag "$f differs"
			return 1
		fi
	done <"$w/list1"
	return 0
}

# st_shape FILE TENSOR: the first dimension of TENSOR from FILE's header.
st_shape() {
	len=$(od -An -tu8 -N8 "$1" | tr -d ' ')
	dd if="$1" bs=1 skip=8 count="$len" 2>/dev/null |
	    sed -n "s/.*\"$2\" *: *{[^}]*\"shape\" *: *\[ *\([0-9]*\).*/\1/p"
}

check "demo tiny" quiet "$MASQ" demo "$w/a" --preset tiny
check "demo tiny again, elsewhere" quiet "$MASQ" demo "$w/b" --preset tiny
check "same preset and seed give byte-identical files" same_tree "$w/a" "$w/b"
check "demo tiny --seed 7" quiet "$MASQ" demo "$w/c" --preset tiny --seed 7
check "another seed gives other weights" \
    sh -c '! cmp -s "$1/model/model.safetensors" "$2/model/model.safetensors"' - "$w/a" "$w/c"
check "another seed gives another calibration set" \
    sh -c '! cmp -s "$1/calib.safetensors" "$2/calib.safetensors"' - "$w/a" "$w/c"
check "the model directory holds config, generation and tokenizer configs, weights" \
    test -s "$w/a/model/config.json" -a -s "$w/a/model/generation_config.json" \
    -a -s "$w/a/model/tokenizer_config.json" -a -s "$w/a/model/model.safetensors" \
    -a ! -e "$w/a/model/model.safetensors.index.json"

check "inspect the model" quiet "$MASQ" inspect "$w/a/model"
check "inspect reports 2 layers" grep -Eq 'layers[^0-9]*2([^0-9]|$)' "$w/log"
T=$(st_shape "$w/a/calib.safetensors" modality)
check "calib.safetensors declares its token count ($T)" test -n "$T"
check "inspect the calibration set" quiet "$MASQ" inspect "$w/a/calib.safetensors"
check "inspect reports the $T tokens" grep -Eq "(^|[^0-9])${T:-x}([^0-9]|$)" "$w/log"
check "inspect reports the 3 modalities" \
    sh -c 'grep -q text "$1" && grep -q vision "$1" && grep -q audio "$1"' - "$w/log"

# The small preset is sharded (4 MiB shards): the index names every shard.
check "demo small" quiet "$MASQ" demo "$w/s" --preset small
check "small is sharded with an index" test -s "$w/s/model/model.safetensors.index.json"
grep -o 'model-[0-9]*-of-[0-9]*\.safetensors' "$w/s/model/model.safetensors.index.json" |
    sort -u >"$w/shards.index"
(cd "$w/s/model" && ls model-*-of-*.safetensors) | sort >"$w/shards.disk"
check "the index names exactly the shards on disk" \
    sh -c 'test -s "$1" && cmp -s "$1" "$2"' - "$w/shards.index" "$w/shards.disk"
check "inspect the sharded model" quiet "$MASQ" inspect "$w/s/model"
check "inspect reports 4 layers" grep -Eq 'layers[^0-9]*4([^0-9]|$)' "$w/log"

# Rewriting a demo directory with another preset leaves no stale shards.
cp -r "$w/s" "$w/s2"
check "demo tiny over the small demo" quiet "$MASQ" demo "$w/s2" --preset tiny
check "no shard or index of the small preset is left" \
    sh -c 'cd "$1/model" && test -s model.safetensors &&
	! ls model-* model.safetensors.index.json >/dev/null 2>&1' - "$w/s2"
check "the rewritten directory equals a fresh tiny demo" same_tree "$w/a" "$w/s2"

"$MASQ" demo "$w/a/calib.safetensors/x" >"$w/out" 2>"$w/err"
rc=$?
check "demo into a path under a file fails with status 2 and a message" \
    sh -c 'test "$1" -eq 2 && test -s "$2"' - "$rc" "$w/err"

# py_checks LABEL ARGS...: demo_check.py's PASS/FAIL lines as TAP results.
py_checks() {
	label=$1
	shift
	"$PYTHON3" "$srcdir/demo_check.py" "$@" >"$w/py.out" 2>&1
	rc=$?
	seen=0
	while IFS= read -r line; do
		case $line in
		"PASS "*) ok "$label: ${line#PASS }"; seen=1 ;;
		"FAIL "*) not_ok "$label: ${line#FAIL }"; seen=1 ;;
		"# "*) echo "$line" ;;
		*) echo "# $line" ;;
		esac
	done <"$w/py.out"
	if [ "$seen" -eq 0 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; }; then
		not_ok "$label: demo_check.py $1 ran (status $rc)"
	fi
}

if [ -n "$PYTHON3" ] && [ -x "$PYTHON3" ] && "$PYTHON3" -c 'import numpy' 2>/dev/null; then
	py_checks "tiny calib" calib "$w/a/calib.safetensors" --hidden 64 --seqs 4 --preset tiny
	py_checks "tiny model" model "$w/a/model"
	py_checks "small calib" calib "$w/s/calib.safetensors" --hidden 256 --seqs 8 --preset small
	py_checks "small model" model "$w/s/model" --shard-bytes 4194304
else
	ok "# SKIP calibration and model statistics: no python3 with numpy (PYTHON3=$PYTHON3)"
fi

done_testing
