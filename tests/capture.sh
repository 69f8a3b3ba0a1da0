#!/bin/sh
# capture.sh: tools/masq-capture, run against the torch stand-ins of
# tests/capture_standin.py (module trees shaped like transformers' that call
# their text decoder with the keywords inputs_embeds and position_ids): a
# Qwen2.5-VL-like model (3-row positions, images, a video; the 4.52+ tree and
# the 4.49 one; one whose forward needs mm_token_type_ids as 5.x's does), a
# Qwen3-VL-like one (deepstack, 4-row positions with a text row first), the
# Qwen2.5-Omni thinker (audio) and LLaVA (1-row positions).  Each set must be
# accepted by `masq inspect` with the token counts the stand-in's media give,
# and hold exactly what the stand-in fed its decoder (numpy compare); the
# refusals (plain positions for an image, a NaN, a bad sample, a sample rate)
# leave no file behind.  transformers itself is not run here: it is not
# packaged in Debian 12.  Skipped where Debian's python3 has no torch.
. "$srcdir/lib.sh"
py=${PYTHON3:-}
[ -n "$py" ] && [ -x "$py" ] || skip_all "no python3 (PYTHON3=$py): masq-capture is not tested"
tv=$("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null) ||
	skip_all "$py has no torch (Debian: python3-torch): masq-capture is not tested"
"$py" -c 'import numpy, PIL' 2>/dev/null ||
	skip_all "$py has no numpy or Pillow (python3-numpy, python3-pil): masq-capture is not tested"
w=$(workdir capture) || exit 99
tool="$top_srcdir/tools/masq-capture"
standin="$srcdir/capture_standin.py"
m="$w/m"
"$py" "$standin" make-media "$m" || { echo "Bail out! make-media failed"; exit 99; }
diag "torch $tv"

cat > "$m/vl.jsonl" <<'EOF'
{"text": "What is in this picture?", "images": ["a.png"]}

{"text": "Just text here, no media at all."}
{"text": "Compare these two.", "images": ["a.png", "b.png"], "system": "Be brief."}
{"text": "And this clip?", "videos": ["frames"]}
EOF
cat > "$m/omni.jsonl" <<EOF
{"text": "What is said?", "audio": ["tone.wav"]}
{"text": "Describe the picture and the sound.", "images": ["$m/a.png"], "audio": "tone.wav", "system": "You are Qwen."}
EOF
cat > "$m/llava.jsonl" <<'EOF'
{"text": "What is this?", "images": ["a.png"]}
{"prompt": "USER: <image>\n<image>\nSame or not? ASSISTANT:", "images": ["a.png", "b.png"]}
{"text": "A plain text question."}
EOF

# capture NAME VARIANT SAMPLES [OPTION...]: run masq-capture on a stand-in,
# writing $w/NAME.safetensors, the decoder's inputs dumped to $w/NAME.dump.
capture() {
	c_name=$1 c_var=$2 c_samples=$3
	shift 3
	rm -rf "$w/$c_name.dump" && mkdir -p "$w/$c_name.dump" || return 99
	MASQ_STANDIN_DUMP="$w/$c_name.dump" "$py" "$tool" --standin "$standin" --model "standin:$c_var" \
		--samples "$c_samples" --out "$w/$c_name.safetensors" "$@"
}

# good NAME VARIANT SAMPLES EXPECT [OPTION...]: the capture succeeds, masq
# inspect accepts the set, and the checker finds in it what the stand-in fed
# its decoder, with inspect's counts as EXPECT (K=V,...) says.
good() {
	g_name=$1 g_var=$2 g_samples=$3 g_expect=$4
	shift 4
	if capture "$g_name" "$g_var" "$g_samples" "$@" >"$w/$g_name.out" 2>"$w/$g_name.err"; then
		ok "$g_name: masq-capture wrote a set ($(grep -m1 'recorded by' "$w/$g_name.out" | sed 's/^ *decoder *//'))"
	else
		not_ok "$g_name: masq-capture failed"
		sed 's/^/#   /' "$w/$g_name.err"
		return
	fi
	if "$MASQ" inspect --json "$w/$g_name.safetensors" >"$w/$g_name.json" 2>"$w/$g_name.ierr"; then
		ok "$g_name: masq inspect accepts it"
	else
		not_ok "$g_name: masq inspect refuses it"
		sed 's/^/#   /' "$w/$g_name.ierr"
	fi
	tap_run "$g_name: the checker" "$w/$g_name.tap" "$py" "$standin" check "$w/$g_name.safetensors" \
		"$w/$g_name.dump" "$g_name/$g_var" "$w/$g_name.json" "$g_expect"
}

good qwen2_5_vl qwen2_5_vl "$m/vl.jsonl" seqs=4,vision=28,audio=0,rows=3,deepstack=0
check "qwen2_5_vl: the decoder is model.language_model" grep -q 'decoder *model.language_model,' "$w/qwen2_5_vl.out"
good qwen2_5_vl_449 qwen2_5_vl_449 "$m/vl.jsonl" seqs=4,vision=28,rows=3 --dtype float32
check "qwen2_5_vl_449: the decoder is model.model" grep -q 'decoder *model,' "$w/qwen2_5_vl_449.out"
good qwen2_5_vl_mm qwen2_5_vl_mm "$m/vl.jsonl" seqs=4,vision=28,rows=3 --dtype float32
good qwen3_vl qwen3_vl "$m/vl.jsonl" seqs=4,vision=28,rows=3,deepstack=3 --dtype float32
check "qwen3_vl: inspect names the deepstack features" sh -c \
	"'$MASQ' inspect '$w/qwen3_vl.safetensors' | grep -q '^deepstack *3 features'"
good omni_thinker omni_thinker "$m/omni.jsonl" seqs=2,vision=6,audio=40,rows=3 --dtype float32
good llava llava "$m/llava.jsonl" seqs=3,vision=27,audio=0,rows=1 --dtype float32
good max_tokens qwen2_5_vl "$m/vl.jsonl" seqs=2,vision=6 --max-tokens 60 --dtype float32
check "max_tokens: the summary says where it stopped" grep -q 'stopped .*--max-tokens 60' "$w/max_tokens.out"

# refused: exit 2 with the reason, and no file (or temporary) left behind
gone() {
	[ ! -e "$w/$1.safetensors" ] || return 1
	for f in "$w/.$1.safetensors."*.tmp; do [ ! -e "$f" ] || return 1; done
}
expect "plain positions" "flat: plain positions for an image are refused" -- capture flat qwen2_5_vl_flat "$m/vl.jsonl"
check "flat: the message names mm_token_type_ids" grep -q mm_token_type_ids "$w/err"
check "flat: no file is left" gone flat
echo keep >"$w/nan.safetensors"
expect "non-finite value at token" "nan: a NaN in inputs_embeds is refused" -- capture nan qwen2_5_vl_nan "$m/vl.jsonl"
check "nan: the existing file is left as it was" grep -qx keep "$w/nan.safetensors"
printf '{"text": "x", "image": ["a.png"]}\n' >"$m/typo.jsonl"
expect "unknown key 'image'" "a misspelt sample key is refused" -- capture typo qwen2_5_vl "$m/typo.jsonl"
printf '{"text": "x", "audio": ["tone8k.wav"]}\n' >"$m/rate.jsonl"
expect "resample" "audio at another sample rate is refused" -- capture rate omni_thinker "$m/rate.jsonl"
printf '{"text": "x", "videos": ["a.png"]}\n' >"$m/vfile.jsonl"
expect "directory of frames" "a video file is refused, naming the frames it wants" -- capture vfile qwen2_5_vl "$m/vfile.jsonl"
expect "more than --max-tokens 5" "a first sample past --max-tokens is refused" -- \
	capture tiny qwen2_5_vl "$m/vl.jsonl" --max-tokens 5
check "refusals leave no file" sh -c "! ls '$w'/typo.safetensors '$w'/rate.safetensors '$w'/vfile.safetensors '$w'/tiny.safetensors 2>/dev/null"
tmps=$(find "$w" -maxdepth 1 -name '.*.tmp')
check "no temporary file is left${tmps:+: $tmps}" test -z "$tmps"
check "--help names the transformers versions" sh -c "'$py' '$tool' --help | tr '\\n' ' ' | grep -q '4.49 to 4.57 and the 5.0 line'"
# without --standin the script loads transformers; where it is missing it
# says so (exit 1), after checking the samples
if "$py" -c 'import transformers' 2>/dev/null; then
	ok "# SKIP transformers is installed for $py: not run here (it would fetch a model)"
else
	"$py" "$tool" --model Qwen/Qwen2.5-VL-3B-Instruct --samples "$m/vl.jsonl" --out "$w/real.safetensors" \
		>"$w/real.out" 2>"$w/real.err"
	rc=$?
	check "without transformers: exit 1 ($rc), saying it is not installed" sh -c \
		"[ $rc -eq 1 ] && grep -q 'transformers is not installed' '$w/real.err'"
fi
done_testing
