#!/bin/sh
# Real checkpoint layouts in: the tiny demo's weights rewritten as
# transformers v5 saves the config (RoPE in rope_parameters), as Qwen2.5-VL
# is released ("model.layers."), as InternVL keeps it ("llm_config",
# "language_model.model.layers.") and as LLaVA-1.5 writes a Llama text
# config that leaves out LlamaConfig's defaults (tests/layouts.py).  The
# same weights must give the same forward, byte for byte, whatever the
# layout; what is left out takes the family's default, which inspect shows.
. "$srcdir/lib.sh"
w=$(workdir layouts)
py=${PYTHON3:-}
export PYTHONDONTWRITEBYTECODE=1
[ -n "$py" ] && [ -x "$py" ] || skip_all "no python3"
"$MASQ" demo "$w/d" --preset tiny >/dev/null || exit 99
C="$w/d/calib.safetensors"
"$MASQ" forward --model "$w/d/model" --calib "$C" --out "$w/ref.safetensors" >/dev/null 2>&1 || exit 99
# data: the tensor bytes of a safetensors file, by name, without its header
cat > "$w/same.py" <<'EOF'
import json, struct, sys
def data(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
a, b = data(sys.argv[1]), data(sys.argv[2])
assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), sorted(k for k in a if a.get(k) != b.get(k))[:3]
EOF
for style in v5 released internvl idefics3 minicpmv omni; do
	"$py" "$srcdir/layouts.py" "$w/d/model" "$w/$style" $style || exit 99
	check "$style: the forward is the demo's, byte for byte" sh -c "'$MASQ' forward --model '$w/$style' --calib '$C' --out '$w/$style.safetensors' > '$w/$style.out' 2>&1 && '$py' '$w/same.py' '$w/ref.safetensors' '$w/$style.safetensors'"
done
check "v5: inspect reads RoPE from rope_parameters" sh -c "'$MASQ' inspect --json '$w/v5' | '$py' -c 'import json,sys; d=json.load(sys.stdin); assert d[\"rope_theta\"] == 1e6 and d[\"mrope_section\"] == [2, 3, 3], d'"
check "released: the layer prefix is found" sh -c "'$MASQ' inspect --json '$w/released' | grep -q '\"layer_prefix\": \"model.layers.\"'"
check "internvl: the decoder's config comes from llm_config" sh -c "'$MASQ' inspect --json '$w/internvl' | grep -q '\"text_config\": \"llm_config\"'"
check "minicpmv: the prefix is found from the tensor names" sh -c "'$MASQ' inspect --json '$w/minicpmv' | grep -q '\"layer_prefix\": \"llm.model.layers.\"'"
"$py" "$srcdir/layouts.py" "$w/d/model" "$w/twice" twice || exit 99
"$MASQ" inspect "$w/twice" > /dev/null 2> "$w/twice.err"; rc=$?
check "decoder layers under two unknown prefixes are refused, naming both (exit 2)" sh -c "test $rc -eq 2 && grep -q 'decoder layers under two prefixes, a.layers. and b.layers.' '$w/twice.err'"
check "--layer-prefix names which of two prefixes is the decoder: inspect, forward" sh -c "
	'$MASQ' inspect --json --layer-prefix b.layers '$w/twice' | grep -q '\"layer_prefix\": \"b.layers.\"' &&
	'$MASQ' forward --model '$w/twice' --calib '$C' --layer-prefix a.layers. --out '$w/twice.safetensors' > /dev/null 2>&1"
check "... run records it, and the session replays" sh -c "
	'$MASQ' run --model '$w/twice' --calib '$C' --method sq --layer-prefix a.layers. --db '$w/twice.db' > /dev/null 2>&1 &&
	'$MASQ' replay --db '$w/twice.db' > /dev/null 2>&1"
"$MASQ" inspect --layer-prefix c.layers. "$w/twice" > /dev/null 2> "$w/lp.err"; rc=$?
check "a --layer-prefix with no decoder under it is refused by name (exit 2)" sh -c "test $rc -eq 2 && grep -q 'layer-prefix c.layers.: .* has no tensor c.layers.0.input_layernorm.weight' '$w/lp.err'"
"$py" "$srcdir/layouts.py" "$w/d/model" "$w/llava" llava || exit 99
check "llava: what the Llama text config leaves out takes LlamaConfig's defaults (eps 1e-6, theta 10000, silu)" sh -c "'$MASQ' inspect --json '$w/llava' | '$py' -c 'import json,sys; d=json.load(sys.stdin); assert d[\"rope_theta\"] == 10000 and abs(d[\"rms_norm_eps\"] - 1e-6) < 1e-12 and d[\"model_type\"] == \"llama\", d'"
check "inspect says where each value came from (v5: rope_parameters; llava: llama's defaults)" sh -c "'$MASQ' inspect --json '$w/v5' | '$py' -c 'import json,sys; s=json.load(sys.stdin)[\"sources\"]; assert s[\"rope_theta\"] == \"text_config.rope_parameters.rope_theta\" and s[\"mrope_section\"] == \"text_config.rope_parameters.mrope_section\", s' && '$MASQ' inspect --json '$w/llava' | '$py' -c 'import json,sys; s=json.load(sys.stdin)[\"sources\"]; assert s[\"rope_theta\"] == \"the default of model_type llama\" and s[\"hidden_size\"] == \"text_config.hidden_size\", s'"
check "llava: and it runs" sh -c "'$MASQ' forward --model '$w/llava' --calib '$C' --out '$w/llava.safetensors' > /dev/null 2>&1"
# every layout through run and the three exports: compressed-tensors passes
# ct_check (its ignore list and prefixes), fake loads, masquant reproduces
# the session in masq eval
for style in v5 released internvl idefics3 minicpmv omni llava; do
	bad=
	rm -rf "$w/$style.db"* "$w/$style-fake" "$w/$style-ct" "$w/$style-mq"
	"$MASQ" run --model "$w/$style" --calib "$C" --method mas-cmc --epochs 0 --wbits 8 --abits 8 --cmc-dtype f32 \
		--db "$w/$style.db" --json > "$w/$style.run.json" 2>"$w/$style.err" || bad="run: $(head -c 200 "$w/$style.err")"
	for f in fake compressed-tensors masquant; do
		[ -n "$bad" ] || "$MASQ" export --db "$w/$style.db" --format $f --out "$w/$style-$f" >/dev/null 2>"$w/$style.err" ||
			bad="export $f: $(head -c 200 "$w/$style.err")"
	done
	[ -n "$bad" ] || "$py" "$srcdir/ct_check.py" "$w/$style" "$w/$style-compressed-tensors" > "$w/$style.tap" 2>&1 ||
		bad="ct_check: $(grep '^not ok' "$w/$style.tap" | head -3 | tr '\n' ' ')"
	[ -n "$bad" ] || "$MASQ" inspect "$w/$style-fake" >/dev/null 2>&1 || bad="the fake export does not load"
	[ -n "$bad" ] || { "$MASQ" eval --model "$w/$style-masquant" --reference "$w/$style" --calib "$C" --json \
		> "$w/$style.eval.json" 2>"$w/$style.err" && "$py" -c "
import json, sys
e = json.load(open('$w/$style.eval.json'))['summary']['sqnr_db']; r = json.load(open('$w/$style.run.json'))['summary']['sqnr_db']
sys.exit(0 if all(abs(e[m] - r[m]) <= 1e-6 * abs(r[m]) for m in ('text', 'vision', 'audio')) else 1)
"; } || bad="masq eval of the masquant export does not reproduce the session"
	check "$style: run, the three exports (ct_check passes), masq eval reproduces the session" test -z "$bad"
	[ -z "$bad" ] || diag "$bad"
done
done_testing
