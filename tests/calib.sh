#!/bin/sh
# calib.sh: masq calib end to end on the tiny-vl demo with real photographs
# (public-domain and CC0 pictures of Debian's python3-skimage, taken from
# the package at test time: apt-get download and dpkg -x, never committed):
#   - the images (core/image.c) against tests/ref_imageproc.py (Pillow and
#     numpy, written from transformers' Qwen2-VL image processor): resized
#     pixels bit for bit, pixel_values within IMG_TOL;
#   - the vision tower (core/vision.c) against tests/ref_vision.py (numpy,
#     from transformers' Qwen2.5-VL vision model) on the demo's tower and on
#     a second random one, per block and at the merger, within VIT_TOL, and
#     its fast path against its plain twin within VIT_TWIN_TOL;
#   - the whole set against an oracle assembled from independent parts:
#     transformers.js's chat template engine and tokenizer (the ids), the
#     two reference scripts (the image features), tests/ref_rope_index.py
#     (the positions) and the checkpoint's embedding rows read by numpy;
#   - the set accepted by masq inspect, masq run and the workbench (tmux);
#   - every refusal named.
# Skipped without the photographs (no apt-get download) or without numpy,
# unless MASQ_NEED_ORACLES=1.
. "$srcdir/lib.sh"
need=${MASQ_NEED_ORACLES:-0}
give_up() {
	if [ "$need" = 1 ]; then echo "Bail out! $* (MASQ_NEED_ORACLES=1)"; exit 1; fi
	skip_all "$*"
}
py=${PYTHON3:-}
{ [ -n "$py" ] && [ -x "$py" ] && "$py" -c 'import numpy, PIL' 2>/dev/null; } ||
	give_up "no python3 with numpy and Pillow (python3-numpy, python3-pil)"
w=$(workdir calib) || exit 99
IMG=$builddir/image_driver VIT=$builddir/vision_driver

# the photographs
photos=${MASQ_SKIMAGE_DATA:-}
if [ -z "$photos" ]; then
	for d in /usr/lib/python3/dist-packages/skimage/data "$builddir/skimage/usr/lib/python3/dist-packages/skimage/data"; do
		[ -f "$d/astronaut.png" ] && photos=$d && break
	done
fi
if [ -z "$photos" ]; then
	mkdir -p "$builddir/skimage" &&
	(cd "$builddir/skimage" && apt-get download python3-skimage > fetch.log 2>&1 &&
		dpkg -x python3-skimage_*.deb .) &&
	photos="$builddir/skimage/usr/lib/python3/dist-packages/skimage/data"
	[ -f "$photos/astronaut.png" ] ||
		give_up "the photographs of python3-skimage could not be fetched (apt-get download): $(tail -1 "$builddir/skimage/fetch.log" 2>/dev/null)"
fi
ph=$w/photos
mkdir -p "$ph"
for f in astronaut.png chelsea.png coffee.png rocket.jpg motorcycle_left.png camera.png logo.png \
	green_palette.png hubble_deep_field.jpg; do
	cp "$photos/$f" "$ph/" || give_up "no $f in $photos"
done
diag "photographs from $photos"

# ---- images against Pillow and the processor ------------------------------
echo '{"min_pixels": 3136, "max_pixels": 200704}' > "$w/pp.json"
set -- "$ph"/*.png "$ph"/*.jpg
"$IMG" --config "$w/pp.json" --out "$w/ours-img.safetensors" "$@" 2> "$w/img.err"
r1=$?
"$py" "$srcdir/ref_imageproc.py" --config "$w/pp.json" --out "$w/ref-img.safetensors" "$@" 2> "$w/refimg.err"
r2=$?
check "image_driver and ref_imageproc.py run on $# photographs" test "$r1" -eq 0 -a "$r2" -eq 0
tap_run "images against the reference" "$w/img-cmp.txt" \
	"$py" "$srcdir/calib_check.py" images "$w/ours-img.safetensors" "$w/ref-img.safetensors"

# ---- the tower against numpy, and against its twin -------------------------
"$MASQ" demo "$w/d" --preset tiny-vl > /dev/null || { echo "Bail out! masq demo --preset tiny-vl"; exit 1; }
m=$w/d/model
echo '{"max_pixels": 50176}' > "$w/pp-small.json"
"$IMG" --config "$w/pp-small.json" --out "$w/px.safetensors" "$ph/astronaut.png" "$ph/rocket.jpg" \
	"$ph/chelsea.png" 2>> "$w/img.err"
"$VIT" "$m" "$w/px.safetensors" "$w/vit-ours.safetensors" --blocks 2> "$w/vit.err" &&
"$VIT" "$m" "$w/px.safetensors" "$w/vit-plain.safetensors" --blocks --plain 2>> "$w/vit.err" &&
"$py" "$srcdir/ref_vision.py" "$m" "$w/px.safetensors" "$w/vit-ref.safetensors" --blocks 2> "$w/refvit.err"
check "the tower runs: fast, plain and the numpy reference" test $? -eq 0
tap_run "the demo's tower against the reference" "$w/vit-cmp.txt" \
	"$py" "$srcdir/calib_check.py" vision "$w/vit-ours.safetensors" "$w/vit-ref.safetensors" "$w/vit-plain.safetensors"
# a second tower, random, of other sizes, written by the reference script
"$py" "$srcdir/ref_vision.py" --make-model "$w/t2" --seed 7 2> "$w/refvit2.err" &&
"$py" "$srcdir/ref_vision.py" --make-pixels "$w/px2.safetensors" --grids "1,4,6;1,8,8;1,10,14;1,40,56" --seed 3 \
	2>> "$w/refvit2.err" &&
"$VIT" "$w/t2" "$w/px2.safetensors" "$w/vit2-ours.safetensors" --blocks 2>> "$w/vit.err" &&
"$VIT" "$w/t2" "$w/px2.safetensors" "$w/vit2-plain.safetensors" --blocks --plain 2>> "$w/vit.err" &&
"$py" "$srcdir/ref_vision.py" "$w/t2" "$w/px2.safetensors" "$w/vit2-ref.safetensors" --blocks 2>> "$w/refvit2.err"
check "a second, random tower runs three ways" test $? -eq 0
tap_run "the random tower against the reference" "$w/vit2-cmp.txt" \
	"$py" "$srcdir/calib_check.py" vision "$w/vit2-ours.safetensors" "$w/vit2-ref.safetensors" "$w/vit2-plain.safetensors"

# ---- masq calib ---------------------------------------------------------------
cat > "$ph/prompts.jsonl" <<'EOF'
{"text": "What is in this picture?", "images": ["astronaut.png"]}
{"text": "Compare <image> and <image>: which is warmer?", "images": ["coffee.png", "rocket.jpg"], "system": "Be brief."}

{"text": "Describe the cat.", "images": ["chelsea.png"]}
{"text": "No image here, just text about the motorcycle: ¿qué? 多模态 😀"}
{"prompt": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>\n", "images": ["motorcycle_left.png"]}
{"text": "<image> is grey, <image> is a logo.", "images": ["camera.png", "logo.png"]}
EOF
"$MASQ" calib --model "$m" --prompts "$ph/prompts.jsonl" --out "$w/calib.safetensors" --json > "$w/calib.json" 2> "$w/calib.err"
check "masq calib writes the set (exit 0)" test $? -eq 0
check "--json: 6 samples, 7 images, tokens by modality" "$py" -c "
import json, sys
d = json.load(open(sys.argv[1]))
assert d['samples'] == 6 and d['images'] == 7, d
t = d['tokens']
assert t['text'] > 0 and t['vision'] > 0 and t['total'] == t['text'] + t['vision'], t
assert d['images_per_second'] > 0
" "$w/calib.json"
check "it reports images per second and the time left on stderr" grep -q 'images/s, .* left' "$w/calib.err"
check "no temporary file is left" test ! -e "$w/calib.safetensors.tmp"
"$MASQ" inspect "$w/calib.safetensors" > "$w/inspect.txt" 2>&1
check "masq inspect accepts it: 6 sequences, 3 position rows" \
	sh -c "grep -q 'sequences      6' '$w/inspect.txt' && grep -q '3 rows' '$w/inspect.txt'"

# the whole set against the oracle assembled from independent parts
node=$(command -v node || command -v nodejs)
nm=${MASQ_NPM_CACHE:-$builddir/npm-cache}/node_modules
if [ -n "$node" ] && [ -d "$nm/@lenml/tokenizers" ]; then
	"$node" "$srcdir/calib-oracle.js" "$nm" "$m" "$ph/prompts.jsonl" > "$w/oracle.jsonl" 2> "$w/oracle.err"
	check "transformers.js renders and tokenizes every sample" test $? -eq 0 -a -s "$w/oracle.jsonl"
	tap_run "the set against the oracle" "$w/set-cmp.txt" \
		"$py" "$srcdir/calib_check.py" set "$w/calib.safetensors" "$m" "$w/oracle.jsonl" "$ph" "$srcdir"
elif [ "$need" = 1 ] && [ -z "$node" ]; then
	not_ok "the set's oracle needs node (Debian: nodejs)"
else
	ok "# SKIP no node or npm packages (tests/tokenize.sh fetches them; the registry may be unreachable): the set's oracle is not run"
fi

# the set drives the pipeline, replay and the workbench
"$MASQ" run --model "$m" --calib "$w/calib.safetensors" --db "$w/s.db" --epochs 0 > "$w/run.txt" 2>&1
check "masq run quantizes the demo on it" test $? -eq 0
check "... with vision and text figures" grep -q 'text .* vision' "$w/run.txt"
"$MASQ" replay --db "$w/s.db" > "$w/replay.txt" 2>&1
check "the session replays exactly" test $? -eq 0
tmux=${TMUX_BIN:-}
if [ -n "$tmux" ] && [ -x "$tmux" ]; then
	sock=$w/tmux.sock
	T() { "$tmux" -S "$sock" -f /dev/null "$@"; }
	T new-session -d -s keep -x 80 -y 24 cat
	T new-session -d -s tui -x 80 -y 24 "env TERM=screen LANG=C.UTF-8 LC_ALL=C.UTF-8 '$MASQ' tui --model '$m' --calib '$w/calib.safetensors' --db '$w/tui.db' 2>>'$w/tui.err'; echo \$? > '$w/tui.rc'; sleep 60"
	wait_for() {
		i=0
		while [ $i -lt 300 ]; do
			T capture-pane -p -t tui > "$w/screen.txt" 2>/dev/null && grep -qF -- "$1" "$w/screen.txt" && return 0
			i=$((i + 1))
			sleep 0.1
		done
		sed 's/^/# screen: /' "$w/screen.txt"
		return 1
	}
	check "the workbench opens on the set" wait_for "pending    mas-cmc"
	T send-keys -t tui c
	check "c calibrates layer 0 on it" wait_for "0 calibrated"
	T send-keys -t tui x
	check "x quantizes it" wait_for "0 quantized"
	T send-keys -t tui Q y
	i=0
	while [ $i -lt 100 ] && [ ! -s "$w/tui.rc" ]; do i=$((i + 1)); sleep 0.1; done
	check "the workbench exits 0" test "$(cat "$w/tui.rc" 2>/dev/null)" = 0
	T kill-server 2>/dev/null
else
	ok "# SKIP no tmux: the workbench is not opened on the set"
fi

# ---- refusals -------------------------------------------------------------------
bad() { printf '%s\n' "$1" > "$ph/bad.jsonl"; }
bad '{"text": "Two markers <image> <image>", "images": ["astronaut.png"]}'
expect "line 1: 2 <image> markers for 1 images" "more markers than images is refused, naming the line" -- \
	"$MASQ" calib --model "$m" --prompts "$ph/bad.jsonl" --out "$w/bad.safetensors"
bad '{"text": "x", "images": ["missing.png"]}'
expect "missing.png" "a missing image is refused by name" -- \
	"$MASQ" calib --model "$m" --prompts "$ph/bad.jsonl" --out "$w/bad.safetensors"
printf 'not an image' > "$ph/fake.png"
bad '{"text": "x", "images": ["fake.png"]}'
expect "neither a PNG nor a JPEG" "a file that is not an image is refused by name" -- \
	"$MASQ" calib --model "$m" --prompts "$ph/bad.jsonl" --out "$w/bad.safetensors"
head -c 20000 "$ph/rocket.jpg" > "$ph/cut.jpg"
bad '{"text": "x", "images": ["cut.jpg"]}'
expect "cut.jpg" "a truncated JPEG is refused by name" -- \
	"$MASQ" calib --model "$m" --prompts "$ph/bad.jsonl" --out "$w/bad.safetensors"
check "... and leaves no file behind" test ! -e "$w/bad.safetensors" -a ! -e "$w/bad.safetensors.tmp"
bad '{"text": "x", "videos": ["clip"]}'
expect "video and audio still need masq-capture" "a video is refused, pointing at masq-capture" -- \
	"$MASQ" calib --model "$m" --prompts "$ph/bad.jsonl" --out "$w/bad.safetensors"
bad '{"prompt": "no placeholder", "images": ["astronaut.png"]}'
expect "0 image placeholders for 1 images" "a prompt without its placeholder is refused" -- \
	"$MASQ" calib --model "$m" --prompts "$ph/bad.jsonl" --out "$w/bad.safetensors"
bad '{"text": "x", "colour": "red"}'
expect "unknown key 'colour'" "an unknown key is refused" -- \
	"$MASQ" calib --model "$m" --prompts "$ph/bad.jsonl" --out "$w/bad.safetensors"
bad '{"text": "x"'
expect "line 1: not JSON" "a line that is not JSON is refused" -- \
	"$MASQ" calib --model "$m" --prompts "$ph/bad.jsonl" --out "$w/bad.safetensors"
"$MASQ" demo "$w/plain" --preset tiny > /dev/null
expect "tokenizer.json" "the tiny demo (no tokenizer) is refused by name" -- \
	"$MASQ" calib --model "$w/plain/model" --prompts "$ph/prompts.jsonl" --out "$w/bad.safetensors"
mkdir -p "$w/novis" && cp "$m"/*.json "$m"/*.safetensors "$w/novis/"
"$py" -c "
import json, sys
p = sys.argv[1] + '/config.json'
c = json.load(open(p)); del c['vision_config']; json.dump(c, open(p, 'w'))
" "$w/novis"
expect "no vision_config: the model has no vision tower" "a model without a vision tower is refused by name" -- \
	"$MASQ" calib --model "$w/novis" --prompts "$ph/prompts.jsonl" --out "$w/bad.safetensors"
sed 's/You are a helpful/You are an unhelpful/' "$m/chat_template.json" > "$w/t.json"
mkdir -p "$w/othertmpl" && cp "$m"/* "$w/othertmpl/" && cp "$w/t.json" "$w/othertmpl/chat_template.json"
expect "not Qwen2-VL's" "a chat template masq does not render is refused, pointing at prompt" -- \
	"$MASQ" calib --model "$w/othertmpl" --prompts "$ph/prompts.jsonl" --out "$w/bad.safetensors"
printf '%s\n' '{"prompt": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>x<|im_end|>\n", "images": ["astronaut.png"]}' > "$ph/raw.jsonl"
"$MASQ" calib --model "$w/othertmpl" --prompts "$ph/raw.jsonl" --out "$w/raw.safetensors" > /dev/null 2>&1
check "... while a sample with its prompt in full still works there" test $? -eq 0 -a -f "$w/raw.safetensors"
"$MASQ" calib --model "$m" --prompts "$ph/prompts.jsonl" --dry-run > "$w/dry.txt" 2>&1
check "--dry-run sizes every sample and writes nothing" \
	sh -c "test \$(grep -c '^line ' '$w/dry.txt') -eq 6 && grep -q '224x224 (64 tokens)' '$w/dry.txt'"
done_testing
