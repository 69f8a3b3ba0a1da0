#!/bin/sh
# masq run: the headless pipeline on the demo, and what it must show
# (issue 3): SmoothQuant's text SQNR below MAS's, MAS+CMC's text outputs
# equal to MAS's, full-rank CMC at least as good as MAS for vision and
# audio, whitened CMC reaching the plain SVD's error at a rank 4x smaller.
. "$srcdir/lib.sh"
w=$(workdir run)
export MASQ_DB="$w/run.db"
py=${PYTHON3:-}
[ -n "$py" ] && [ -x "$py" ] || skip_all "no python3 to read the JSON"

"$MASQ" demo "$w/tiny" --preset tiny >/dev/null && "$MASQ" demo "$w/small" --preset small >/dev/null
check "demos written" test -f "$w/small/calib.safetensors"
T="--model $w/tiny/model --calib $w/tiny/calib.safetensors"
S="--model $w/small/model --calib $w/small/calib.safetensors"

# The claims, at W4A8, alpha 0.5, on the small demo, of the closed form
# (--epochs 0; learning has its own tests, tests/learn.sh).
check "run --method all (small, W4A8, alpha 0.5, closed form)" \
	sh -c "'$MASQ' run $S --method all --epochs 0 --wbits 4 --abits 8 --alpha 0.5 --json > '$w/all.json'"
check "run mas-cmc at full rank" sh -c "'$MASQ' run $S --method mas-cmc --epochs 0 --rank 1.0 --json > '$w/full.json'"
check "run mas-cmc with diagnostics" sh -c "'$MASQ' run $S --method mas-cmc --epochs 0 --cmc-diagnostics --json > '$w/diag.json'"
tap_run claims "$w/claims.tap" "$py" "$srcdir/run_check.py" claims "$w/all.json" "$w/full.json" "$w/diag.json" 1.0
tap_run shape "$w/shape.tap" "$py" "$srcdir/run_check.py" shape "$w/all.json" "$w/full.json"

# Alpha search: every layer reports its curve and uses its best point.
check "run --alpha search (tiny, mas and sq)" sh -c "'$MASQ' run $T --method mas --alpha search --alpha-grid 0.3:0.1:0.8 --json > '$w/search-mas.json' &&
	'$MASQ' run $T --method sq --alpha search --alpha-grid 0.3:0.1:0.8 --json > '$w/search-sq.json'"
tap_run "search (mas)" "$w/s1.tap" "$py" "$srcdir/run_check.py" search "$w/search-mas.json"
tap_run "search (sq)" "$w/s2.tap" "$py" "$srcdir/run_check.py" search "$w/search-sq.json"

# Determinism: the same run twice gives the same numbers.
# (the times left out: "seconds" and "phase_seconds" wherever they are)
untimed='import json, sys
def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in ("seconds", "phase_seconds")}
    return [strip(v) for v in x] if isinstance(x, list) else x
print(json.dumps(strip(json.load(sys.stdin)), indent=1, sort_keys=True))'
"$MASQ" run $T --method mas-cmc --no-db --json | "$py" -c "$untimed" > "$w/d1.json"
"$MASQ" run $T --method mas-cmc --no-db --json | "$py" -c "$untimed" > "$w/d2.json"
check "the same run twice gives the same document" sh -c "grep -q '\"layers\"' '$w/d1.json' && cmp -s '$w/d1.json' '$w/d2.json'"

# --set: a per-layer override is honoured and reported.
"$MASQ" run $T --method mas-cmc --set 1.qkv.alpha.vision=0.8 --set '*'.o.rank=16 --set 0.method=sq --json > "$w/set.json"
check "--set overrides alpha, rank and method" "$py" -c "
import json; d=json.load(open('$w/set.json')); L=d['layers']
q=[x for x in L[1]['linears'] if x['name']=='q_proj'][0]; o=[x for x in L[1]['linears'] if x['name']=='o_proj'][0]
assert abs(q['alpha']['vision']-0.8)<1e-6 and abs(q['alpha']['text']-0.5)<1e-6, q['alpha']
assert o['rank']==16, o['rank']
assert L[0]['method']=='sq' and L[1]['method']=='mas-cmc', (L[0]['method'], L[1]['method'])
"
check "text table and summary" sh -c "'$MASQ' run $T --method mas | grep -q '^summary'"
check "--method all prints the methods side by side" sh -c "'$MASQ' run $T --method all | grep -q 'rtn.*sq.*mas.*mas-cmc'"

expect "unknown method 'gptq'" "unknown method" -- "$MASQ" run $T --method gptq
expect "--wbits must be 2 to 8, or 16" "bad bits" -- "$MASQ" run $T --wbits 12
expect "layer '9' is not in 0..1" "--set with a layer out of range" -- "$MASQ" run $T --set 9.q.alpha=0.5
expect "down_proj is quantized but not smoothed" "--set alpha on down_proj" -- "$MASQ" run $T --set 0.down.alpha=0.5
expect "unknown key 'beta'" "--set with an unknown key" -- "$MASQ" run $T --set 0.q.beta=1
expect "alpha must be in \[0, 1\]" "--set alpha out of range" -- "$MASQ" run $T --set 0.q.alpha=2
expect "--alpha must be a number" "bad --alpha" -- "$MASQ" run $T --alpha lots
expect "--rank is a ratio" "fractional rank above 1" -- "$MASQ" run $T --rank 2.5
# contradictory options are refused, not resolved in silence
expect "--db and --no-db contradict" "--no-db --db" -- "$MASQ" run $T --no-db --db "$w/x.db"
check "... and nothing was recorded into it" test ! -e "$w/x.db"
expect "--alpha has no effect with --method rtn" "--alpha with rtn" -- "$MASQ" run $T --method rtn --alpha 0.3
expect "--rank has no effect with --method rtn: only mas-cmc" "--rank with rtn" -- "$MASQ" run $T --method rtn --rank 8
expect "--no-whiten has no effect with --method mas:" "--no-whiten with mas" -- "$MASQ" run $T --method mas --no-whiten
expect "--alpha-grid has no effect .* --alpha search" "--alpha-grid without search" -- "$MASQ" run $T --alpha-grid 0:0.1:1
expect "the alpha grid 0.2:1e-30:0.9 .* has more than 64 points" "--alpha-grid with a step no int counts" -- \
    "$MASQ" run $T --method sq --alpha search --alpha-grid 0.2:1e-30:0.9
expect "--search-tokens has no effect" "--search-tokens without search" -- "$MASQ" run $T --search-tokens 64
expect "--epochs has no effect with --method sq" "--epochs with sq" -- "$MASQ" run $T --method sq --epochs 2
expect "--lr has no effect with --method mas-cmc --epochs 0" "--lr with --epochs 0" -- "$MASQ" run $T --epochs 0 --lr 0.1
expect "rank 100000 is more than any compensated linear can hold: min(in, out) is at most 64" "--rank above every linear" -- "$MASQ" run $T --rank 100000
expect "rank 65 is more than any" "--set rank above every linear" -- "$MASQ" run $T --set 0.q.rank=65
check "--method all takes every method's options" "$MASQ" run $T --method all --epochs 0 --rank 8 --no-db

# The SQNR's noise floor is the reference's: the mean squared error of a
# token floored at 1e-5, so a lossless run reports, per token,
# 10 log10(mean y^2 / 1e-5) of the FP output (masq 0.1 floored the sum,
# 10 log10(hidden) higher).  The FP outputs come from masq forward.
"$MASQ" run $T --method rtn --wbits 16 --abits 16 --no-db --json > "$w/lossless.json" 2>/dev/null
"$MASQ" forward $T --out "$w/fp.safetensors" > /dev/null 2>&1
cat > "$w/lossless.py" <<'EOF'
import json, math, struct, sys
def st(path):
    b = open(path, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; return b, 8 + n, json.loads(b[8:8 + n])
d = json.load(open(sys.argv[1]))
b, base, h = st(sys.argv[2])
last = max((k for k in h if k.startswith("layers.")), key=lambda k: int(k.split(".")[1]))
T, D = h[last]["shape"]; a = h[last]["data_offsets"][0]
y = struct.unpack("<%df" % (T * D), b[base + a:base + a + 4 * T * D])
cb, cbase, ch = st(sys.argv[3]); ma = ch["modality"]["data_offsets"][0]
mod = cb[cbase + ma:cbase + ma + T]
per = {0: [], 1: [], 2: []}
for t in range(T):
    per[mod[t]].append(10 * math.log10(sum(v * v for v in y[t * D:(t + 1) * D]) / D / 1e-5))
for m, name in enumerate(("text", "vision", "audio")):
    want = sum(per[m]) / len(per[m]); got = d["summary"]["sqnr_db"][name]
    assert abs(got - want) < 1e-6, (name, got, want)
EOF
check "a lossless run's SQNR is the mean-floored one, per modality" \
	"$py" "$w/lossless.py" "$w/lossless.json" "$w/fp.safetensors" "$w/tiny/calib.safetensors"

# Rank 0 is no compensation: with mas-cmc every token then takes the factor
# the stored weight was smoothed with, so without quantization the layer is
# the FP one (it was 18 dB for audio when vision and audio kept their own
# factors with nothing to bridge them to the text-smoothed weight).
"$MASQ" run $T --method mas-cmc --epochs 0 --rank 0 --wbits 16 --abits 16 --no-db --json > "$w/r0.json" 2>/dev/null
check "mas-cmc --rank 0 without quantization equals the lossless run, per modality" "$py" -c "
import json
a=json.load(open('$w/r0.json'))['summary']['sqnr_db']; b=json.load(open('$w/lossless.json'))['summary']['sqnr_db']
assert all(abs(a[k]-b[k]) < 1e-9 for k in ('text','vision','audio')), (a, b)"

# A weight that is not a finite number: every command that reads it names
# the tensor and the element, exit 2 (inspect reads every value once).
cp -r "$w/tiny" "$w/nan" && "$py" - "$w/nan/model" <<'EOF'
import glob, json, struct, sys
f = sorted(glob.glob(sys.argv[1] + "/*.safetensors"))[0]
b = bytearray(open(f, "rb").read()); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
name = [k for k in h if k.endswith("layers.1.mlp.up_proj.weight")][0]
e = h[name]; off = 8 + n + e["data_offsets"][0] + 5 * (2 if e["dtype"] == "BF16" else 4)
if e["dtype"] == "BF16": b[off:off + 2] = b"\xc0\x7f"
else: b[off:off + 4] = struct.pack("<f", float("nan"))
open(f, "wb").write(b)
EOF
N="--model $w/nan/model --calib $w/nan/calib.safetensors"
expect "layers.1.mlp.up_proj.weight: element 5 is nan, not a finite number" "inspect: a NaN weight" -- "$MASQ" inspect "$w/nan/model"
expect "layers.1.mlp.up_proj.weight: element 5 is not a finite number" "run: a NaN weight" -- "$MASQ" run $N --method mas --no-db
expect "layers.1.mlp.up_proj.weight: element 5 is not a finite number" "run --epochs 0 (each linear loaded as it is used): a NaN weight" -- "$MASQ" run $N --method mas-cmc --epochs 0 --no-db
expect "layers.1.mlp.up_proj.weight: element 5 is not a finite number" "forward: a NaN weight" -- "$MASQ" forward $N
# What the compensation costs, counted independently from the config's
# shapes and the files' headers: the run's parameters and bytes, the
# checkpoint's tensor bytes, and the masquant export's L1/L2 and total.
"$MASQ" run $S --method mas-cmc --epochs 0 --db "$w/cost.db" --json > "$w/cost.json" 2>/dev/null
"$MASQ" run $S --method mas-cmc --epochs 0 --db "$w/cost2.db" > "$w/cost.txt" 2>/dev/null
"$MASQ" export --db "$w/cost.db" --format masquant --out "$w/cost-mq" > "$w/cost-export.txt" 2>&1
cat > "$w/cost.py" <<'EOF'
import json, os, struct, sys
model, run, exp, txt, etxt = sys.argv[1:6]
def header(path):
    b = open(path, "rb").read(8); n = struct.unpack("<Q", b)[0]
    h = json.loads(open(path, "rb").read(8 + n)[8:]); h.pop("__metadata__", None); return h
def nbytes(h):
    return sum(t["data_offsets"][1] - t["data_offsets"][0] for t in h.values())
cfg = json.load(open(model + "/config.json")); tc = cfg.get("text_config", cfg)
H, I = tc["hidden_size"], tc["intermediate_size"]
hd = H // tc["num_attention_heads"]; kv = tc["num_key_value_heads"] * hd
shape = {"q_proj": (H, H), "k_proj": (H, kv), "v_proj": (H, kv), "o_proj": (H, H),
         "gate_proj": (H, I), "up_proj": (H, I)}
d = json.load(open(run))
params = 0
for L in d["layers"]:
    lp = 0
    for x in L["linears"]:
        if x["name"] not in shape: continue
        i, o = shape[x["name"]]; p = 0
        for m, c in x.get("cmc", {}).items():
            p += c["rank"] * (i + o)
        assert x["cmc_params"] == p, (x["name"], x["cmc_params"], p)
        assert x["rank_floored"] == (x["rank"] > 0 and int(0.05 * min(i, o)) < 32), x
        lp += p
    assert L["cmc_bytes"] == 2 * lp, (L["cmc_bytes"], lp)   # F16, the default
    params += lp
c = d["cost"]
assert c["cmc_params"] == params and c["cmc_bytes"] == 2 * params and c["cmc_dtype"] == "F16", c
ck = sum(nbytes(header(model + "/" + f)) for f in os.listdir(model) if f.endswith(".safetensors"))
assert c["checkpoint_bytes"] == ck, (c["checkpoint_bytes"], ck)
side = header(exp + "/masquant.safetensors")
l12 = sum(t["data_offsets"][1] - t["data_offsets"][0] for n, t in side.items() if n.endswith((".L1", ".L2")))
assert l12 == c["cmc_bytes"], (l12, c["cmc_bytes"])
assert all(t["dtype"] == "F16" for n, t in side.items() if n.endswith((".L1", ".L2"))), "L1/L2 not F16"
total = nbytes(side) + sum(nbytes(header(exp + "/" + f)) for f in os.listdir(exp)
                           if f.endswith(".safetensors") and f != "masquant.safetensors")
line = [l for l in open(etxt) if " of tensors, " in l][0]
want = "%.2fx the checkpoint's" % (total / ck)
assert want in line and ("low-rank %.2f MB" % (l12 / 1e6)) in line, (line, total, l12, ck)
summ = [l for l in open(txt) if l.startswith("compensation: ")][0]
assert summ.startswith("compensation: %d parameters, %.2f MB in F16" % (params, 2 * params / 1e6)), summ
print("cost: %d parameters, %d bytes of L1/L2, export %d bytes, checkpoint %d" % (params, l12, total, ck))
EOF
check "the compensation's cost: run, export and checkpoint agree with the files" \
	sh -c "'$py' '$w/cost.py' '$w/small/model' '$w/cost.json' '$w/cost-mq' '$w/cost.txt' '$w/cost-export.txt' > '$w/cost.out' 2>&1 || { cat '$w/cost.out' '$w/cost-export.txt'; exit 1; }"
[ -s "$w/cost.out" ] && sed 's/^/# /' "$w/cost.out"
# Where the compensation costs more than it mends (small, W8A8): the run
# warns, and rank 0 on such a linear gives exactly the figure it reported
# as "without" (layer 0 q_proj sees the same input either way).
"$MASQ" run $S --method mas-cmc --epochs 0 --wbits 8 --abits 8 --no-db > "$w/w8.txt" 2>/dev/null
check "W8A8: the run warns where the compensation measures below none at all" \
	grep -q '^warning: for vision the compensation measures below none at all' "$w/w8.txt"
"$MASQ" run $S --method mas-cmc --epochs 0 --wbits 8 --abits 8 --no-db --json > "$w/w8.json" 2>/dev/null
"$MASQ" run $S --method mas-cmc --epochs 0 --wbits 8 --abits 8 --no-db --json --set 0.q_proj.rank=0 > "$w/w8r0.json" 2>/dev/null
check "rank 0 gives the 'without' figure exactly" "$py" -c "
import json
a = [x for x in json.load(open('$w/w8.json'))['layers'][0]['linears'] if x['name'] == 'q_proj'][0]
b = [x for x in json.load(open('$w/w8r0.json'))['layers'][0]['linears'] if x['name'] == 'q_proj'][0]
assert a['sqnr_db']['vision'] < a['sqnr_no_cmc_db']['vision'] - 0.1, a
assert b['rank'] == 0 and 'sqnr_no_cmc_db' not in b, b
assert b['sqnr_db']['vision'] == a['sqnr_no_cmc_db']['vision'] and b['sqnr_db']['audio'] == a['sqnr_no_cmc_db']['audio'], (a, b)
assert b['sqnr_db']['text'] == a['sqnr_db']['text'], (a, b)
"
# A rank budget (allocate-ranks): within its bytes, never more whitened
# error than the uniform ratio at the same bytes, the ranks applied to the
# linears that were quantized, the session replayed exactly; refusals.
"$MASQ" run $S --method mas-cmc --epochs 0 --rank-budget 1MB --db "$w/alloc.db" --json > "$w/alloc.json" 2>/dev/null
check "--rank-budget 1MB: the allocation keeps its budget and beats the uniform ratio at the same bytes" "$py" -c "
import json
d = json.load(open('$w/alloc.json')); r = d['rank_allocation']
assert r['budget'] == 1e6 and r['bytes'] <= 1e6 and r['objective'] == 'relative', r
assert r['error_db'] < r['uniform']['error_db'] and r['uniform']['bytes'] <= r['bytes'], (r['error_db'], r['uniform'])
want = {(l, n): k for l, n, k in r['ranks']}
got = {(L['layer'], x['name']): x['rank'] for L in d['layers'] for x in L['linears'] if x['name'] != 'down_proj'}
assert want == got, (want, got)
assert all(k == 0 or k >= 2 for k in want.values()), want
assert d['cost']['cmc_bytes'] == round(r['bytes']), (d['cost'], r['bytes'])
c = r['budget_curve']
assert len(c) == 9 and all(c[i][1] >= c[i + 1][1] for i in range(8)) and all(x[1] <= x[2] for x in c), c
"
check "a session with an allocation replays exactly" "$MASQ" replay --db "$w/alloc.db" --exact
"$MASQ" run $S --method mas-cmc --epochs 0 --rank-target -10 --no-db --json > "$w/alloct.json" 2>/dev/null
check "--rank-target -10 reaches -10 dB with fewer bytes than the uniform ratio needs" "$py" -c "
import json
r = json.load(open('$w/alloct.json'))['rank_allocation']
assert r['error_db'] <= -10 and r['uniform']['error_db'] > r['error_db'], r
"
expect "--rank, --rank-budget and --rank-target each choose the ranks" "--rank with --rank-budget" -- "$MASQ" run $T --rank 8 --rank-budget 1MB
expect "--rank-budget has no effect with --method mas" "--rank-budget with mas" -- "$MASQ" run $T --method mas --rank-budget 1MB
expect "unknown unit 'parsecs'" "--rank-budget with a bad unit" -- "$MASQ" run $T --rank-budget "3 parsecs"
expect "--rank-objective has no effect without" "--rank-objective alone" -- "$MASQ" run $T --rank-objective absolute
# sessions diff and the list's columns, checked against the runs' own JSON.
"$MASQ" run $T --method mas-cmc --epochs 0 --db "$w/diff.db" --json > "$w/diff-a.json" 2>/dev/null
"$MASQ" run $T --method mas-cmc --epochs 0 --db "$w/diff.db" --rank-budget 100kB --set 1.qkv.alpha.vision=0.7 --json > "$w/diff-b.json" 2>/dev/null
"$MASQ" run $S --method mas --epochs 0 --db "$w/diff.db" > /dev/null 2>&1
"$MASQ" export --db "$w/diff.db" --session 2 --format masquant --out "$w/diff-mq" > "$w/diff-export.txt" 2>&1
check "sessions diff 1 2 --json" sh -c "'$MASQ' sessions diff 1 2 --db '$w/diff.db' --json > '$w/diff.json'"
check "... says what changed and the figures of both, as the runs reported them" "$py" -c "
import json
a, b, d = (json.load(open('$w/' + f)) for f in ('diff-a.json', 'diff-b.json', 'diff.json'))
rows = {(r['layer'], r['what']): r for r in d['rows']}
r = rows[(1, 'qkv alpha vision')]; assert abs(r['a'] - 0.5) < 1e-6 and abs(r['b'] - 0.7) < 1e-6, r
assert (0, 'qkv alpha vision') not in rows, 'an unchanged setting is not listed'
for m in ('text', 'vision', 'audio'):
    r = rows[('model', 'SQNR ' + m)]
    assert r['a'] == a['summary']['sqnr_db'][m] and r['b'] == b['summary']['sqnr_db'][m], r
    for L in range(2):
        r = rows[(L, 'SQNR ' + m)]
        assert r['a'] == a['layers'][L]['sqnr_db'][m] and r['b'] == b['layers'][L]['sqnr_db'][m], r
r = rows[('model', 'compensation bytes')]
assert r['a'] == a['cost']['cmc_bytes'] and r['b'] == b['cost']['cmc_bytes'] and r['b_minus_a'] == r['b'] - r['a'], r
for L in b['layers']:
    for x in L['linears']:
        k = (L['layer'], x['name'] + ' rank')
        if k in rows: assert rows[k]['b'] == x['rank'], (k, rows[k], x['rank'])
"
check "sessions list --json: the final SQNR and the export's bytes" sh -c "'$MASQ' sessions list --db '$w/diff.db' --json > '$w/list.json'" 
check "... as the run and the export reported them" "$py" -c "
import json, re
l = {s['id']: s for s in json.load(open('$w/list.json'))}; b = json.load(open('$w/diff-b.json'))
assert l[2]['sqnr_db'] == b['summary']['sqnr_db'] or all(abs(l[2]['sqnr_db'][m] - b['summary']['sqnr_db'][m]) < 1e-12 for m in ('text', 'vision', 'audio')), l[2]
assert l[1]['export_bytes'] is None, l[1]
line = [x for x in open('$w/diff-export.txt') if ' of tensors, ' in x][0]
assert l[2]['export_bytes'] > 0 and l[3]['settings']['method'] == 'mas', (l[2], line)
"
check "sessions list prints the columns" sh -c "'$MASQ' sessions list --db '$w/diff.db' | head -n 1 | grep -q 'text  vision   audio    export'"
expect "are of different models" "sessions diff of two models" -- "$MASQ" sessions diff 1 3 --db "$w/diff.db"
expect "diff takes two session ids" "sessions diff with one id" -- "$MASQ" sessions diff 1 --db "$w/diff.db"
# Sensitivity: the error each layer adds itself, from the recorded SQNRs.
check "own_sqnr_db is the SQNR of the noise each layer adds (its output's NSR less its input's)" "$py" -c "
import json, math
d = json.load(open('$w/diff-a.json')); prev = None
for L in d['layers']:
    for m in ('text', 'vision', 'audio', 'all'):
        out = 10 ** (-L['sqnr_db'][m] / 10); inn = 10 ** (-prev['sqnr_db'][m] / 10) if prev else 0
        want = min(120, -10 * math.log10(max(out - inn, 1e-12)))
        assert abs(L['own_sqnr_db'][m] - want) < 1e-9, (L['layer'], m, L['own_sqnr_db'][m], want)
    prev = L
"
# The held-out split: the held-out sequences stay out of the statistics,
# the search and learning, so changing their embeddings changes the
# held-out figures and leaves every fitted one exactly as it was.
check "--eval-split 0.25 (tiny, mas-cmc, alpha search, 1 epoch)" sh -c "'$MASQ' run $T --method mas-cmc --epochs 1 --alpha search --alpha-grid 0.3:0.2:0.7 --eval-split 0.25 --db '$w/split.db' --json > '$w/split.json'"
cat > "$w/perturb.py" <<'EOF'
import json, struct, sys
src, dst, runj = sys.argv[1:4]
b = bytearray(open(src, "rb").read()); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); base = 8 + n
held = json.load(open(runj))["summary"]["held_out"]["sequences"]
assert held, "no held-out sequence"
lens = struct.unpack("<%di" % h["seq_lens"]["shape"][0], b[base + h["seq_lens"]["data_offsets"][0]:base + h["seq_lens"]["data_offsets"][1]])
T, D = h["inputs_embeds"]["shape"]; o = base + h["inputs_embeds"]["data_offsets"][0]
t0 = 0
for s, L in enumerate(lens):
    if s in held:
        for t in range(t0, t0 + L):
            row = struct.unpack_from("<%df" % D, b, o + 4 * t * D)
            struct.pack_into("<%df" % D, b, o + 4 * t * D, *[1.5 * v + 0.01 for v in row])
    t0 += L
open(dst, "wb").write(b)
EOF
"$py" "$w/perturb.py" "$w/tiny/calib.safetensors" "$w/perturbed.safetensors" "$w/split.json"
check "the same run on the perturbed held-out sequences" sh -c "'$MASQ' run --model '$w/tiny/model' --calib '$w/perturbed.safetensors' --method mas-cmc --epochs 1 --alpha search --alpha-grid 0.3:0.2:0.7 --eval-split 0.25 --no-db --json > '$w/split2.json'"
check "held-out figures moved, every fitted figure (statistics, search, learning, SQNR, KL) did not" "$py" -c "
import json
a, b = json.load(open('$w/split.json')), json.load(open('$w/split2.json'))
assert a['summary']['held_out']['sequences'] == b['summary']['held_out']['sequences']
for La, Lb in zip(a['layers'], b['layers']):
    assert La['sqnr_db'] == Lb['sqnr_db'] and La['misalignment'] == Lb['misalignment'], La['layer']
    assert La['alpha_search'] == Lb['alpha_search'] and La['learning']['losses'] == Lb['learning']['losses'], La['layer']
    assert La['held_out_sqnr_db'] != Lb['held_out_sqnr_db'], La['layer']
assert a['summary']['sqnr_db'] == b['summary']['sqnr_db'] and a['summary']['kl_text'] == b['summary']['kl_text']
assert a['summary']['held_out']['sqnr_db'] != b['summary']['held_out']['sqnr_db']
"
check "a session with a held-out split replays exactly" "$MASQ" replay --db "$w/split.db" --exact
check "a run without a split reports no held-out figures" "$py" -c "
import json
d = json.load(open('$w/diff-a.json')); assert 'held_out' not in d['summary'] and 'held_out_sqnr_db' not in d['layers'][0]
"
expect "leaves no sequence to fit" "a split that leaves nothing to fit" -- "$MASQ" run $T --eval-split 0.9 --no-db
expect "--eval-split must be a number in" "a split of 0" -- "$MASQ" run $T --eval-split 0 --no-db
# weight-only sessions export as pack-quantized (tests/export.sh checks the
# files); a width vLLM does not serve is refused before anything is written
"$MASQ" run $T --method sq --wbits 8 --abits 16 --wgroup 0 --db "$w/w8a16.db" > /dev/null 2>&1
check "a W8A16 session exports as compressed-tensors pack-quantized, and says what it weighs" sh -c "
	'$MASQ' export --db '$w/w8a16.db' --format compressed-tensors --out '$w/w8a16-ct' > '$w/w8a16.txt' &&
	grep -q '\"format\": \"pack-quantized\"' '$w/w8a16-ct/config.json' &&
	grep -q ' of tensors, .* weights .*(0.50x its .* of decoder linears), scales ' '$w/w8a16.txt'"
"$MASQ" run $T --method sq --wbits 6 --abits 16 --wgroup 0 --db "$w/w6a16.db" > /dev/null 2>&1
expect "at 4 or 8 bits: this session quantized weights to 6 bits" "a W6A16 compressed-tensors export is refused" -- "$MASQ" export --db "$w/w6a16.db" --format compressed-tensors --out "$w/w6a16-ct"
check "... and nothing is written" test ! -e "$w/w6a16-ct"
done_testing
