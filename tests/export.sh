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
export PYTHONDONTWRITEBYTECODE=1	# ct_check is imported: no __pycache__ in the source tree
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
expect "writes W8A8 int8 (int-quantized) or weight-only W4A16 and W8A16 (pack-quantized), the schemes vLLM serves from integer weights: this session is W4A8" \
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

# ---- compressed-tensors pack-quantized: weight-only W4A16 / W8A16 as vLLM serves it --
# the checker's own fixtures first: every good case passes, every bad one fails
"$py" "$srcdir/ct_fixtures.py" "$w/fx" >"$w/fx.list" 2>"$w/fx.err"
check "ct_fixtures.py writes its cases" test -s "$w/fx.list"
nfx=0 badfx=
while read -r dir verdict what; do
	nfx=$((nfx + 1))
	if "$py" "$srcdir/ct_check.py" "$w/fx/orig" "$dir" >"$w/fx.tap" 2>&1; then got=pass; else got=fail; fi
	[ "$got" = "$verdict" ] || badfx="$badfx; $(basename "$dir") $got, expected $verdict ($what)"
done <"$w/fx.list"
check "ct_check gives each of the $nfx fixtures its verdict (packing order, offsets, scales, vLLM's rules)" \
	test -z "$badfx"
[ -z "$badfx" ] || diag "$badfx"
# masq's own: tiny (channel) and small (groups: 704 inputs take 32 and 64)
S=$w/demo-small
quiet "$MASQ" demo "$S" --preset small
SM=$S/model SC=$S/calib.safetensors
for cfg in "rtn-w4-ch $M $C --method rtn --wbits 4 --abits 16 --wgroup 0" \
	"mas-w4-ch $M $C --method mas --wbits 4 --abits 16 --wgroup 0" \
	"sq-w8-ch $M $C --method sq --wbits 8 --abits 16 --wgroup 0" \
	"rtn-w4-g64 $SM $SC --method rtn --wbits 4 --abits 16 --wgroup 64" \
	"mas-w4-g32 $SM $SC --method mas --wbits 4 --abits 16 --wgroup 32"; do
	set -- $cfg
	pk=$1 mm=$2 cc=$3; shift 3
	check "pipeline plans, $pk" quiet sh -c "'$drv' plan '$mm' '$cc' '$w/plans-$pk' $* > '$w/$pk.json'"
	check "pack-quantized export, $pk" quiet "$drv" export "$mm" "$w/plans-$pk" compressed-tensors "$w/ct-$pk"
	"$py" "$srcdir/ct_check.py" "$mm" "$w/ct-$pk" >"$w/ct-$pk.tap" 2>&1
	check "ct_check passes the $pk export (levels, zero points and scales exact)" test $? -eq 0
	grep -q '^not ok' "$w/ct-$pk.tap" && sed 's/^/#   /' "$w/ct-$pk.tap"
	grep '^# sizes' "$w/ct-$pk.tap" | head -1
done
check "a pack-quantized export holds 4-bit levels at an eighth of an I32 word each" quiet "$py" - "$srcdir" "$w/ct-rtn-w4-g64" "$SM" <<'EOF'
import json, sys
sys.path.insert(0, sys.argv[1])
from ct_check import read_dir
exp, _, _ = read_dir(sys.argv[2]); orig, _, _ = read_dir(sys.argv[3])
qc = json.load(open(sys.argv[2] + "/config.json"))["quantization_config"]
assert qc["format"] == "pack-quantized" and qc["config_groups"]["group_0"]["format"] == "pack-quantized"
w = qc["config_groups"]["group_0"]["weights"]
assert (w["num_bits"], w["strategy"], w["group_size"], w["symmetric"]) == (4, "group", 64, False), w
packed = sum(len(t.raw) for n, t in exp.items() if n.endswith(".weight_packed"))
src = sum(len(t.raw) for n, t in orig.items() if ".layers." in n and n.endswith("_proj.weight"))
assert packed * 4 == src, (packed, src)   # BF16 (16 bits) to 4 bits
EOF
check "masq eval runs the rtn W4A16 group export within 0.05 dB of the pipeline (scales rounded to BF16)" quiet sh -c "
	'$MASQ' eval --model '$w/ct-rtn-w4-g64' --reference '$SM' --calib '$SC' --json > '$w/ct-g64-eval.json' &&
	'$py' -c \"
import json
e = json.load(open('$w/ct-g64-eval.json')); p = json.load(open('$w/rtn-w4-g64.json'))['summary']['sqnr_db']
assert e['format'] == 'compressed-tensors' and e['wbits'] == 4 and e['abits'] == 16, e
for m in ('text', 'vision', 'audio', 'all'):
    print(m, e['summary']['sqnr_db'][m], p[m])
    assert abs(e['summary']['sqnr_db'][m] - p[m]) < 0.05, m
\""
check "pipeline plans, W8A16 groups of 64, W4A16 groups of 16 and 128, W3A16" quiet sh -c "
	'$drv' plan '$SM' '$SC' '$w/plans-w8g64' --method rtn --wbits 8 --abits 16 --wgroup 64 >/dev/null &&
	'$drv' plan '$SM' '$SC' '$w/plans-w4g16' --method rtn --wbits 4 --abits 16 --wgroup 16 >/dev/null &&
	'$drv' plan '$SM' '$SC' '$w/plans-w4g128' --method rtn --wbits 4 --abits 16 --wgroup 128 >/dev/null &&
	'$drv' plan '$M' '$C' '$w/plans-w3' --method rtn --wbits 3 --abits 16 --wgroup 0 >/dev/null"
expect "Marlin kernels take zero points at 4 bits only" "compressed-tensors refuses W8A16 groups (asymmetric)" -- \
	"$drv" export "$SM" "$w/plans-w8g64" compressed-tensors "$w/ct-w8g64"
expect "groups of 32, 64 or 128" "compressed-tensors refuses groups of 16" -- \
	"$drv" export "$SM" "$w/plans-w4g16" compressed-tensors "$w/ct-w4g16"
expect "do not divide down_proj's 704 inputs" "compressed-tensors refuses groups that do not divide a linear" -- \
	"$drv" export "$SM" "$w/plans-w4g128" compressed-tensors "$w/ct-w4g128"
expect "at 4 or 8 bits: this session quantized weights to 3 bits" "compressed-tensors refuses W3A16" -- \
	"$drv" export "$M" "$w/plans-w3" compressed-tensors "$w/ct-w3"
check "and none of them wrote anything" sh -c "! ls -d '$w'/ct-w8g64 '$w'/ct-w4g16 '$w'/ct-w4g128 '$w'/ct-w3 2>/dev/null"

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
assert man["format"] == "masquant" and man["format_version"] == 2 and man["base_modality"] == "text", man
qc = json.load(open(d + "/config.json"))["quantization_config"]
assert qc["quant_method"] == "masquant" and qc["format_version"] == 2, qc
assert man["wbits"] == 4 and man["abits"] == 8, (man["wbits"], man["abits"])
P = man["layer_prefix"]
paths = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
         "o_proj": "self_attn.o_proj", "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
         "down_proj": "mlp.down_proj"}
seen = set()
for L in man["layers"]:
    assert L["method"] == "mas-cmc" and L["wbits"] == 4 and L["abits"] == 8 and L["container"] == "U4x2"
    for lin, info in L["linears"].items():
        p = "%s%d.%s" % (P, L["layer"], paths[lin])
        w, s = model[p + ".weight"], model[p + ".weight_scale"]
        out, half = w.shape
        inp = side[p + ".smooth.text"].shape[0] if lin != "down_proj" else 2 * half
        # U4x2: two levels per byte, low nibble first, each level + 8
        b = w.array().astype(int)
        lv = np.stack([b & 15, b >> 4], axis=2).reshape(out, 2 * half)[:, :inp] - 8
        assert w.dtype == "U8" and half == (inp + 1) // 2 and s.dtype == "F32" and s.shape == [out, 1], \
            (p, w.dtype, w.shape, s.shape)
        assert np.abs(lv).max() <= 7 and np.abs(lv).max() == 7, p + ": W4 levels outside [-7, 7] or not reaching 7"
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
expect "--calib FILE is required" "masq eval without --calib" -- "$MASQ" eval --model "$w/mq" --reference "$M"
quiet "$MASQ" demo "$w/other" --preset small
expect "not the reference's architecture" "masq eval against another architecture" -- \
	"$MASQ" eval --model "$w/mq" --reference "$w/other/model" --calib "$w/other/calib.safetensors"
check "an export is byte-identical when repeated" quiet sh -c "
	'$drv' export '$M' '$w/plans-cmc' masquant '$w/mq2' >/dev/null && diff -r '$w/mq' '$w/mq2'"

# ---- dtypes the format defines beyond masq's arithmetic: inspected, carried, aligned --
cp -r "$M" "$w/odd-model"
check "a model with F8_E4M3, C64, F4 and odd-sized I32 tensors beside its own" quiet "$py" - "$w/odd-model/model.safetensors" <<'EOF'
import json, struct, sys
p = sys.argv[1]
d = open(p, "rb").read(); n = struct.unpack("<Q", d[:8])[0]
h = json.loads(d[8:8 + n]); meta = h.pop("__metadata__", None); data = d[8 + n:]
extra = {"model.visual.merger.scale_fp8": ("F8_E4M3", [5], bytes([1, 2, 3, 4, 5])),
         "model.visual.merger.phase": ("C64", [1], bytes(range(8))),
         "model.visual.merger.mx": ("F4", [6], bytes([0x21, 0x43, 0x65])),
         "model.visual.merger.ids": ("I32", [3], struct.pack("<3i", 7, -1, 9))}
# the original's tensors first (all whole 8-byte words), then the odd ones, largest first
order = sorted(extra, key=lambda k: -{"C64": 8, "I32": 4, "F8_E4M3": 1, "F4": 1}[extra[k][0]])
off = len(data)
for k in order:
    dt, sh, raw = extra[k]; h[k] = {"dtype": dt, "shape": sh, "data_offsets": [off, off + len(raw)]}
    data += raw; off += len(raw)
if meta is not None: h = {"__metadata__": meta, **h}
hb = json.dumps(h, separators=(",", ":")).encode()
hb += b" " * ((8 - (8 + len(hb)) % 8) % 8)
open(p, "wb").write(struct.pack("<Q", len(hb)) + hb + data)
EOF
check "masq inspect lists them with their dtypes" quiet sh -c "
	'$MASQ' inspect '$w/odd-model' --json > '$w/odd-inspect.json' &&
	grep -q F8_E4M3 '$w/odd-inspect.json' && grep -q C64 '$w/odd-inspect.json' && grep -q '\"F4\"' '$w/odd-inspect.json'"
check "compressed-tensors and masquant exports carry them byte for byte, every tensor aligned" quiet sh -c "
	'$drv' export '$w/odd-model' '$w/plans-sq' compressed-tensors '$w/odd-ct' >/dev/null &&
	'$drv' export '$w/odd-model' '$w/plans-cmc' masquant '$w/odd-mq' >/dev/null &&
	'$py' - '$srcdir' '$w/odd-model' '$w/odd-ct' '$w/odd-mq' <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
from ct_check import read_file
src, _ = read_file(sys.argv[2] + '/model.safetensors')
size = {'F64': 8, 'I64': 8, 'C64': 8, 'F32': 4, 'I32': 4, 'BF16': 2, 'F16': 2}
for d in sys.argv[3:]:
    for f in ('model.safetensors', 'masquant.safetensors'):
        try:
            t, _ = read_file(d + '/' + f)
        except FileNotFoundError:
            continue
        bad = [(k, v.dtype, v.offset) for k, v in t.items() if v.offset % size.get(v.dtype, 1)]
        assert not bad, (d, f, bad)
    t, _ = read_file(d + '/model.safetensors')
    for k in [k for k in src if '.merger.' in k]:
        assert t[k].dtype == src[k].dtype and t[k].raw == src[k].raw, (d, k)
EOF
"
"$py" "$srcdir/ct_check.py" "$w/odd-model" "$w/odd-ct" >"$w/odd-ct.tap" 2>&1
check "... and ct_check finds every offset aligned" grep -q '^ok - every tensor.s offset is aligned to its element size' "$w/odd-ct.tap"

# ---- what an export never does ---------------------------------------------------
mkdir -p "$w/taken" && echo keep > "$w/taken/keep"
expect "already exists" "an existing directory is refused" -- "$drv" export "$M" "$w/plans-cmc" fake "$w/taken"
check "and left untouched, with no temporary directory beside it" quiet sh -c "
	test \"\$(ls -A '$w/taken')\" = keep && ! ls -A '$w' | grep -q '^\.taken\.tmp'"
: > "$w/plainfile"
expect "not a directory" "a parent that is a file is refused" -- "$drv" export "$M" "$w/plans-cmc" fake "$w/plainfile/out"
# a full disk: a file size limit makes the shard's write fail part-way
mkdir -p "$w/full"
expect "write error" "a write error (full disk) fails the export" -- \
	sh -c "ulimit -f 200; trap '' XFSZ; exec '$drv' export '$M' '$w/plans-cmc' masquant '$w/full/mq'"
check "and leaves nothing: no target, no temporary directory" test -z "$(ls -A "$w/full")"
done_testing
