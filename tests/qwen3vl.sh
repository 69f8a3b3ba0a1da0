#!/bin/sh
# qwen3vl.sh: a tiny Qwen3-VL checkpoint (tests/ref_qwen3vl.py writes it,
# with deepstack features in its calibration set) through inspect, run,
# the exports and eval; what masq refuses about it.  forward_qwen3vl.sh
# checks the layer itself against the numpy oracle.
. "$srcdir/lib.sh"
w=$(workdir qwen3vl)
py=${PYTHON3:-}
[ -n "$py" ] && [ -x "$py" ] && "$py" -c "import numpy" 2>/dev/null || skip_all "no python3 with numpy"
export PYTHONDONTWRITEBYTECODE=1
drv=${EXPORT_DRIVER:-$builddir/export_driver}

"$py" "$srcdir/ref_qwen3vl.py" --make-model "$w/q" --seed 4 --layers 3 --deepstack 2 >/dev/null 2>&1
"$py" "$srcdir/ref_qwen3vl.py" --make-model "$w/k0" --seed 4 --layers 3 --deepstack 0 >/dev/null 2>&1
M=$w/q/model C=$w/q/calib.safetensors
check "the tiny Qwen3-VL checkpoint is written" test -s "$M/model.safetensors" -a -s "$C"
check "inspect: per-head q/k norms, interleaved M-RoPE, where each value came from" sh -c "
	'$MASQ' inspect '$M' > '$w/inspect.txt' && grep -q 'per-head q/k RMSNorm (Qwen3)' '$w/inspect.txt' &&
	grep -q 'sections t 6, h 5, w 5, interleaved (Qwen3-VL)' '$w/inspect.txt' &&
	grep -q 'head_dim  *text_config.head_dim' '$w/inspect.txt'"
check "inspect of the calibration set counts its deepstack features" sh -c "
	'$MASQ' inspect '$C' | grep -q '^deepstack      2 features (Qwen3-VL), added after layers 0 to 1'"
check "learned mas-cmc (2 epochs, through the q/k norms) runs, and learning never loses SQNR" sh -c "
	'$MASQ' run --model '$M' --calib '$C' --method mas-cmc --db '$w/learn.db' --json > '$w/learn.json' 2>/dev/null &&
	'$py' -c \"
import json, sqlite3
db = sqlite3.connect('$w/learn.db')
rows = [json.loads(p) for (p,) in db.execute(\\\"select payload from events where name = 'train-layer' and kind = 'result'\\\")]
assert len(rows) == 3, len(rows)
for r in rows:
    for m in ('text', 'vision'):
        assert r['sqnr_learned_db'][m] >= r['sqnr_init_db'][m] - 1e-9, (m, r['sqnr_learned_db'], r['sqnr_init_db'])
\""
check "... and its session replays exactly" "$MASQ" replay --db "$w/learn.db"
check "mas-cmc W4A8 with the closed form runs, records and finishes" sh -c "
	'$MASQ' run --model '$M' --calib '$C' --method mas-cmc --epochs 0 --cmc-dtype f32 --db '$w/q.db' --json \
	> '$w/run.json' 2> '$w/run.err'"
check "... without the missing-deepstack warning" sh -c "! grep -q deepstack '$w/run.err'"
check "the masquant export runs in masq eval and reproduces the session's figures exactly" sh -c "
	'$MASQ' export --db '$w/q.db' --format masquant --out '$w/mq' >/dev/null &&
	'$MASQ' eval --model '$w/mq' --reference '$M' --calib '$C' --json > '$w/eval.json' &&
	'$py' -c \"
import json
e = json.load(open('$w/eval.json'))['summary']['sqnr_db']; r = json.load(open('$w/run.json'))['summary']['sqnr_db']
for m in ('text', 'vision', 'audio', 'all'):
    if r.get(m) is None: continue
    assert abs(e[m] - r[m]) <= 1e-6 * abs(r[m]), (m, e[m], r[m])
\""
check "the export carries q_norm and k_norm byte for byte" "$py" - "$srcdir" "$M" "$w/mq" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
from ct_check import read_dir
a, _, _ = read_dir(sys.argv[2]); b, _, _ = read_dir(sys.argv[3])
names = [n for n in a if n.endswith(("q_norm.weight", "k_norm.weight"))]
assert len(names) == 6 and all(b[n].raw == a[n].raw for n in names), names
EOF
check "W8A8 sq: compressed-tensors export passes ct_check" sh -c "
	'$MASQ' run --model '$M' --calib '$C' --method sq --wbits 8 --abits 8 --db '$w/w8.db' >/dev/null 2>&1 &&
	'$MASQ' export --db '$w/w8.db' --format compressed-tensors --out '$w/ct' >/dev/null &&
	'$py' '$srcdir/ct_check.py' '$M' '$w/ct' > '$w/ct.tap' 2>&1"
grep '^not ok' "$w/ct.tap" | sed 's/^/# /'
check "... and masq eval runs it as vLLM would" sh -c "
	'$MASQ' eval --model '$w/ct' --reference '$M' --calib '$C' --json | grep -q '\"format\": \"compressed-tensors\"'"
check "replay of the Qwen3-VL session matches exactly" "$MASQ" replay --db "$w/q.db"
check "without deepstack features: a warning naming what is missing, and the run goes on" sh -c "
	'$MASQ' run --model '$w/k0/model' --calib '$w/k0/calib.safetensors' --method sq --no-db >/dev/null 2> '$w/k0.err' &&
	grep -q 'warning: the calibration set has [0-9]* vision tokens but no deepstack features' '$w/k0.err'"
"$MASQ" demo "$w/demo" --preset tiny >/dev/null
expect "carries deepstack features, which only Qwen3-VL adds" "deepstack features for a Qwen2.5-VL model are refused" -- \
	"$MASQ" forward --model "$w/demo/model" --calib "$C"
"$py" - "$w/q/model/config.json" "$w/bad-interleave.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1])); c["text_config"]["rope_scaling"]["mrope_interleaved"] = False
json.dump(c, open(sys.argv[2], "w"))
EOF
mkdir -p "$w/bad" && cp "$w/bad-interleave.json" "$w/bad/config.json" && ln -s "$M/model.safetensors" "$w/bad/model.safetensors"
expect "mrope_interleaved is false, but model_type qwen3_vl_text interleaves" \
	"a Qwen3-VL config that says its M-RoPE is not interleaved is refused" -- "$MASQ" inspect "$w/bad"
"$py" "$srcdir/ref_qwen3vl.py" --make-model "$w/v5" --seed 5 --layers 3 --deepstack 1 --v5 >/dev/null 2>&1
"$py" - "$w/v5/model/config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1])); tc = c["text_config"]
tc["rope_parameters"].pop("rope_theta"); tc.pop("rope_theta", None); c.pop("rope_theta", None)
json.dump(c, open(sys.argv[1], "w"))
EOF
expect "Qwen3-VL's default differs between transformers 4.57 (5000000) and v5 (500000)" \
	"a v5 config without rope_theta is refused: the default moved" -- "$MASQ" inspect "$w/v5/model"
done_testing
