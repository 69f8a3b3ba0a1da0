#!/bin/sh
# export.sh: the three export formats on the tiny demo, with plans made by
# the pipeline itself (tests/export_driver, no session layer): the
# compressed-tensors export passes ct_check.py, the fake export loads as a
# model, the masquant export carries its factors and `masq eval` reproduces
# the pipeline's numbers from it; exports are deterministic, never replace
# anything, and leave nothing behind on a write error.
. "$srcdir/lib.sh"
w=$(workdir export)
py=${PYTHON3:-}
[ -n "$py" ] && [ -x "$py" ] && "$py" -c "import numpy" 2>/dev/null || skip_all "no python3 with numpy"
drv=${EXPORT_DRIVER:-$builddir/export_driver}
[ -x "$drv" ] || skip_all "no $drv"

# quiet CMD...: run CMD with its output in $w/log, shown as comments on failure.
quiet() {
	if "$@" >"$w/log" 2>&1; then
		return 0
	fi
	diag "failed: $*"
	sed 's/^/#   /' "$w/log"
	return 1
}
# refuse NEEDLE NAME -- CMD...: CMD exits 2 with NEEDLE on stderr.
refuse() {
	needle=$1 name=$2; shift 3
	"$@" >"$w/out" 2>"$w/err"; got=$?
	if [ "$got" -eq 2 ] && grep -q -- "$needle" "$w/err"; then ok "$name"
	else not_ok "$name"; diag "status $got; stderr:"; sed 's/^/#   /' "$w/err"; fi
}

D=$w/demo
quiet "$MASQ" demo "$D" --preset tiny
M=$D/model C=$D/calib.safetensors
check "pipeline plans, mas-cmc W4A8" quiet sh -c "'$drv' plan '$M' '$C' '$w/plans-cmc' > '$w/cmc.json'"
check "pipeline plans, sq W8A8" quiet sh -c "'$drv' plan '$M' '$C' '$w/plans-sq' --method sq --wbits 8 --abits 8 > '$w/sq.json'"

# ---- fake: the input's layout and dtypes, loadable as a model -----------------
check "fake export" quiet "$drv" export "$M" "$w/plans-cmc" fake "$w/fake"
check "masq inspect loads the fake export" quiet "$MASQ" inspect "$w/fake"
check "masq forward runs on the fake export" quiet "$MASQ" forward --model "$w/fake" --calib "$C"
check "fake export in shards of 100 kB: an index, and it loads" quiet sh -c "
	'$drv' export '$M' '$w/plans-cmc' fake '$w/fake-sh' --shard-bytes 100000 >/dev/null &&
	test -f '$w/fake-sh/model.safetensors.index.json' && test -f '$w/fake-sh/model-00002-of-00005.safetensors' &&
	'$MASQ' inspect '$w/fake-sh' >/dev/null"
check "non-weight files copied, provenance written" quiet sh -c "
	cmp '$M/config.json' '$w/fake/config.json' && cmp '$M/tokenizer_config.json' '$w/fake/tokenizer_config.json' &&
	cmp '$M/generation_config.json' '$w/fake/generation_config.json' && test -s '$w/fake/masq-provenance.json'"

# ---- compressed-tensors: W8A8 int8 as vLLM loads it ------------------------------
check "compressed-tensors export (sq W8A8)" quiet "$drv" export "$M" "$w/plans-sq" compressed-tensors "$w/ct"
tap_run ct_check "$w/ct.tap" "$py" "$srcdir/ct_check.py" "$M" "$w/ct"
check "compressed-tensors export in shards" quiet "$drv" export "$M" "$w/plans-sq" compressed-tensors "$w/ct-sh" --shard-bytes 60000
"$py" "$srcdir/ct_check.py" "$M" "$w/ct-sh" >"$w/ct-sh.tap" 2>&1
grep -q '^ok - the index names every tensor' "$w/ct-sh.tap" && ! grep -q '^not ok' "$w/ct-sh.tap"
check "the sharded export passes ct_check too, index included" test $? -eq 0
# the checker catches an unfolded norm
cp -r "$w/ct" "$w/ct-broken"
"$py" - "$M" "$w/ct-broken" <<'EOF'
import json, struct, sys
def entry(path, name):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n))
    a, b = h[name]["data_offsets"]; return 8 + n + a, b - a
name = "model.language_model.layers.0.input_layernorm.weight"
o, n = entry(sys.argv[1] + "/model.safetensors", name)
src = open(sys.argv[1] + "/model.safetensors", "rb").read()[o:o + n]
o2, n2 = entry(sys.argv[2] + "/model.safetensors", name)
with open(sys.argv[2] + "/model.safetensors", "r+b") as f:
    f.seek(o2); f.write(src)
EOF
"$py" "$srcdir/ct_check.py" "$M" "$w/ct-broken" >"$w/broken.tap" 2>&1
check "ct_check fails an export whose norm lost its factor" grep -q '^not ok - weight \* weight_scale reproduces' "$w/broken.tap"
refuse "the compressed-tensors export is W8A8: this session quantized weights to 4 bits" \
	"compressed-tensors refuses a W4 session" -- "$drv" export "$M" "$w/plans-cmc" compressed-tensors "$w/ct-w4"
check "and writes nothing" test ! -e "$w/ct-w4"
check "masq eval runs the compressed-tensors export near the pipeline's sq numbers" quiet sh -c "
	'$MASQ' eval --model '$w/ct' --reference '$M' --calib '$C' --json > '$w/ct-eval.json' &&
	'$py' -c \"
import json
e = json.load(open('$w/ct-eval.json'))['summary']['sqnr_db']; p = json.load(open('$w/sq.json'))['summary']['sqnr_db']
assert json.load(open('$w/ct-eval.json'))['format'] == 'compressed-tensors'
for m in ('text', 'vision', 'audio'):
    assert abs(e[m] - p[m]) < 1.0, (m, e[m], p[m])
\""

# ---- masquant: text-factor weights plus the factors, run by masq eval ------------
check "masquant export (mas-cmc W4A8)" quiet sh -c "'$drv' export '$M' '$w/plans-cmc' masquant '$w/mq' > '$w/mq-report.json'"
check "masquant.safetensors and masquant.json carry factors, ranks and bits" quiet "$py" - "$srcdir" "$w/mq" <<'EOF'
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from ct_check import read_file
d = sys.argv[2]
man = json.load(open(d + "/masquant.json"))
side, _ = read_file(d + "/masquant.safetensors")
model, _ = read_file(d + "/model.safetensors")
assert man["format"] == "masquant" and man["base_modality"] == "text", man
assert man["wbits"] == 4 and man["abits"] == 8, (man["wbits"], man["abits"])
P = man["layer_prefix"]
paths = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
         "o_proj": "self_attn.o_proj", "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
         "down_proj": "mlp.down_proj"}
seen = set()
for L in man["layers"]:
    assert L["method"] == "mas-cmc" and L["wbits"] == 4 and L["abits"] == 8
    for lin, info in L["linears"].items():
        p = "%s%d.%s" % (P, L["layer"], paths[lin])
        w, s = model[p + ".weight"], model[p + ".weight_scale"]
        out, inp = w.shape
        assert w.dtype == "I8" and s.dtype == "F32" and s.shape == [out, 1], (p, w.dtype, s.shape)
        assert np.abs(w.array().astype(int)).max() <= 7, p + ": W4 levels outside [-7, 7]"
        for m in ("text", "vision", "audio"):
            t = side.get(p + ".smooth." + m)
            if lin == "down_proj":
                assert t is None, p + " has a factor"
                continue
            assert t is not None and t.dtype == "F32" and t.shape == [inp], (p, m)
            assert (t.array() > 0).all()
            seen.add(t)
        assert info["unified"] == (lin == "down_proj"), (p, info)
        for m, r in info["rank"].items():
            l1, l2 = side[p + ".cmc.%s.L1" % m], side[p + ".cmc.%s.L2" % m]
            assert l1.shape == [inp, r] and l2.shape == [r, out] and r > 0, (p, m, l1.shape, l2.shape)
            seen.update([l1, l2])
        if lin != "down_proj":
            assert set(info["rank"]) == {"vision", "audio"}, (p, info["rank"])
assert len(seen) == len(side), "masquant.safetensors holds tensors the manifest does not explain"
assert not any(k.startswith(P) and ".smooth." in k for k in model), "factors leaked into the model's shards"
EOF
check "masq eval on the masquant export" quiet sh -c "
	'$MASQ' eval --model '$w/mq' --reference '$M' --calib '$C' --json > '$w/mq-eval.json'"
check "masq eval reproduces the pipeline's SQNR per modality (rel 1e-6)" quiet "$py" -c "
import json
e = json.load(open('$w/mq-eval.json')); p = json.load(open('$w/cmc.json'))['summary']
assert e['format'] == 'masquant' and e['wbits'] == 4 and e['abits'] == 8, e['format']
for m in ('text', 'vision', 'audio', 'all'):
    a, b = e['summary']['sqnr_db'][m], p['sqnr_db'][m]
    assert abs(a - b) <= 1e-6 * abs(b), (m, a, b)
    print(m, a, b)
"
sed 's/^/# /' "$w/log"
check "masq eval prints a table and a summary" quiet sh -c "
	'$MASQ' eval --model '$w/mq' --reference '$M' --calib '$C' | grep -q '^summary'"
refuse "--calib FILE is required" "masq eval without --calib" -- "$MASQ" eval --model "$w/mq" --reference "$M"
quiet "$MASQ" demo "$w/other" --preset small
refuse "not the reference's architecture" "masq eval against another architecture" -- \
	"$MASQ" eval --model "$w/mq" --reference "$w/other/model" --calib "$w/other/calib.safetensors"
check "an export is byte-identical when repeated" quiet sh -c "
	'$drv' export '$M' '$w/plans-cmc' masquant '$w/mq2' >/dev/null && diff -r '$w/mq' '$w/mq2'"

# ---- what an export never does ---------------------------------------------------
mkdir -p "$w/taken" && echo keep > "$w/taken/keep"
refuse "already exists" "an existing directory is refused" -- "$drv" export "$M" "$w/plans-cmc" fake "$w/taken"
check "and left untouched, with no temporary directory beside it" quiet sh -c "
	test \"\$(ls -A '$w/taken')\" = keep && ! ls -A '$w' | grep -q '^\.taken\.tmp'"
: > "$w/plainfile"
refuse "not a directory" "a parent that is a file is refused" -- "$drv" export "$M" "$w/plans-cmc" fake "$w/plainfile/out"
# a full disk: a file size limit makes the shard's write fail part-way
mkdir -p "$w/full"
refuse "write error" "a write error (full disk) fails the export" -- \
	sh -c "ulimit -f 200; trap '' XFSZ; exec '$drv' export '$M' '$w/plans-cmc' masquant '$w/full/mq'"
check "and leaves nothing: no target, no temporary directory" test -z "$(ls -A "$w/full")"
done_testing
