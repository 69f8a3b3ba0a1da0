#!/bin/sh
# Learned MAS end to end (masq(1), LEARNING): masq run learns by default and
# --epochs 0 is the closed form; the last-layer figures on the tiny demo
# against the reference's (learned-mas.md); learning never loses to the
# closed form for MAS; usq, the reference's unified baseline; the options
# and their refusals; an independent numpy oracle (tests/ref_learn.py) fed
# the very inputs masq recorded for layer 1 learns the same losses and
# factors; replay of learned sessions, exact and within tolerance.
. "$srcdir/lib.sh"
# Learning follows the quantizers' rounding: where a float sum lands across
# a rounding edge, one level flips and the next steps' gradients differ, so
# masq and the oracle (numpy, on OpenBLAS too) agree to 1e-7 only while both
# sum in the same kernels' order.  With OpenBLAS's AVX-512 kernels
# (Cooperlake) a flip at layer 1's sixth step moved the losses by 3.5e-4 and
# the factors by 1.5e-2 while the first five agreed to 1e-7.  This test
# compares exactly, so it pins one kernel set, the AVX2 one every machine
# here runs (a CPU without AVX2 and FMA keeps its own); that learning
# crosses kernel sets within tolerances is replay.sh's and this file's
# tolerance-mode replay below.
if grep -q ' avx2 ' /proc/cpuinfo 2>/dev/null && grep -q ' fma ' /proc/cpuinfo 2>/dev/null; then
	OPENBLAS_CORETYPE=Haswell
	export OPENBLAS_CORETYPE
fi
w=$(workdir learn)
py=${PYTHON3:-}
[ -n "$py" ] && [ -x "$py" ] || skip_all "no python3 (it reads the JSON documents here)"
cd "$w" || exit 99
"$MASQ" demo tiny --preset tiny >/dev/null || exit 99
T="--model $w/tiny/model --calib $w/tiny/calib.safetensors"
jget() { "$py" -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }
# expect MSG NAME CMD...: CMD exits 2 and says MSG on stderr
expect() {
	msg=$1 name=$2; shift 3
	"$@" > out.txt 2> err.txt; rc=$?
	if [ "$rc" -eq 2 ] && grep -q -- "$msg" err.txt; then ok "$name: refused, exit 2"
	else not_ok "$name: exit $rc, stderr: $(head -c 300 err.txt)"; fi
}

for m in mas mas-cmc usq; do
	# every checkpoint kept: the oracle below starts from layer 1's input
	check "run --method $m learns (2 epochs, the default)" sh -c "MASQ_KEEP_CHECKPOINTS=1 '$MASQ' run $T --method $m --db l.db --json > $m.json 2>/dev/null"
	check "run --method $m --epochs 0" sh -c "'$MASQ' run $T --method $m --epochs 0 --no-db --json > $m-0.json 2>/dev/null"
done

# The reference's figures (learned-mas.md: fp32 port of the reference on this
# demo, W4A8, 2 epochs, last-layer SQNR).  A 1e-6 change of the start moves
# them by up to 0.15 dB (the learning is chaotic), hence 0.2 dB.
"$py" - <<'EOF' > fig.tap
import json
ref = {"mas": (39.04, 34.52, 37.39), "mas-cmc": (39.24, 35.88, 38.89)}
closed = {"mas": (38.03, 33.72, 37.21), "mas-cmc": (38.35, 35.93, 38.40)}
mods = ("text", "vision", "audio")
for m in ("mas", "mas-cmc"):
    d = json.load(open(m + ".json")); z = json.load(open(m + "-0.json"))
    got = [d["summary"]["sqnr_db"][k] for k in mods]
    g0 = [z["summary"]["sqnr_db"][k] for k in mods]
    print("# %s learned %s, closed form %s" % (m, "/".join("%.2f" % x for x in got), "/".join("%.2f" % x for x in g0)))
    for k, a, b in zip(mods, got, ref[m]):
        print("%sok - %s learned %s: %.2f dB, within 0.2 dB of the reference's %.2f" % ("" if abs(a - b) <= 0.2 else "not ", m, k, a, b))
    for k, a, b in zip(mods, g0, closed[m]):
        print("%sok - %s --epochs 0 %s: %.2f dB, the closed form's %.2f" % ("" if abs(a - b) <= 0.006 else "not ", m, k, a, b))
    if m == "mas":
        for k, a, b in zip(mods, got, g0):
            print("%sok - mas learned >= closed form for %s (%.2f >= %.2f)" % ("" if a >= b else "not ", k, a, b))
    for L in d["layers"]:
        t = L.get("learning")
        ok = t is not None and t["epochs"] == 2 and t["steps"] == 8 and len(t["losses"]) == 8 and t["chain"] == "mas" \
            and all(x > 0 for x in t["losses"]) and t["skipped"] == 0
        print("%sok - %s layer %d: 2 epochs, 8 steps, every loss recorded, on the train-mode chain" % ("" if ok else "not ", m, L["layer"]))
    ok = all(L.get("learning") is None and L["epochs"] == 0 for L in z["layers"])
    print("%sok - %s --epochs 0: no layer learns" % ("" if ok else "not ", m))
EOF
tap_include fig.tap

# usq: one factor for every token; learned it is the paper's "uniform + opt"
check "usq learned differs from its closed form, and its closed form from sq" "$py" -c "
import json
u=json.load(open('usq.json'))['summary']['sqnr_db']; u0=json.load(open('usq-0.json'))['summary']['sqnr_db']
import subprocess
assert u != u0, (u, u0)
"
"$MASQ" run $T --method sq --no-db --json > sq.json 2>/dev/null
check "... usq's closed form smooths o_proj, sq's does not: they differ" "$py" -c "
import json
a=json.load(open('usq-0.json'))['summary']['sqnr_db']; b=json.load(open('sq.json'))['summary']['sqnr_db']
assert a != b, (a, b)
"
check "... usq reports one (unified) alpha" "$py" -c "
import json
d=json.load(open('usq.json')); al=d['layers'][0]['linears'][0]['alpha']
assert d['layers'][0]['method']=='usq' and al['text']==al['vision']==al['audio'], al
"

# per layer through --set, and the options
check "--set 1.epochs=0: layer 1 keeps the closed form, layer 0 learns" sh -c "
'$MASQ' run $T --method mas --set 1.epochs=0 --no-db --json > set.json 2>/dev/null &&
'$py' -c \"import json; L=json.load(open('set.json'))['layers']; assert L[0]['learning'] and 'learning' not in L[1] and L[1]['epochs']==0, L[1]\""
check "--loss mse --loss-weights 1,1,1 --lr 0.02 --tie --epochs 1: recorded as given" sh -c "
'$MASQ' run $T --method mas --loss mse --loss-weights 1,1,1 --lr 0.02 --tie --epochs 1 --no-db --json > opt.json 2>/dev/null &&
'$py' -c \"import json; d=json.load(open('opt.json')); assert d['loss']=='mse' and d['tie'] and d['epochs']==1 and abs(d['lr']-0.02)<1e-9 and d['loss_weights']=={'text':1.0,'vision':1.0,'audio':1.0}, d; assert d['layers'][0]['learning']['steps']==4\""
expect "epochs must be" "--epochs -1" -- "$MASQ" run $T --epochs -1 --no-db
expect "--loss is mae or mse" "--loss l2" -- "$MASQ" run $T --loss l2 --no-db
expect "TEXT,VISION,AUDIO" "--loss-weights 1,2" -- "$MASQ" run $T --loss-weights 1,2 --no-db
expect "loss weights are all 0" "--loss-weights 0,0,0" -- "$MASQ" run $T --loss-weights 0,0,0 --no-db
expect "--lr must be a number" "--lr 0" -- "$MASQ" run $T --lr 0 --no-db
expect "the number of epochs is chosen per layer" "--set 0.q.epochs=1" -- "$MASQ" run $T --set 0.q.epochs=1 --no-db
expect "'x' is not a whole number" "--set 0.epochs=x" -- "$MASQ" run $T --set 0.epochs=x --no-db
expect "the loss is mae or mse" "--set 0.loss=l1" -- "$MASQ" run $T --set 0.loss=l1 --no-db

# The independent oracle, fed what masq recorded: layer 1's inputs (the
# checkpoint after layer 0 holds the train-mode chain, the train-mode FP
# chain and the FP chain), 2 epochs from its own closed-form start.
if "$py" -c "import numpy" 2>/dev/null; then
	"$py" - "$srcdir/ref_learn.py" "$w/tiny" <<'EOF' > oracle.tap
import json, os, sqlite3, struct, subprocess, sys
import numpy as np
oracle, demo = sys.argv[1], sys.argv[2]
c = sqlite3.connect("l.db")
sid = [i for i, st in c.execute("select id, settings from sessions order by id") if json.loads(st)["method"] == "mas"][0]
ev = [(n, json.loads(p)) for n, p in c.execute(
    "select name, payload from events where session=? and kind='result' order by seq", (sid,))]
ck = [p["checkpoint"] for n, p in ev if n == "next-layer"][0]
tr = [p for n, p in ev if n == "train-layer"][1]
def st_read(path):
    b = open(path, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); out = {}
    for k, v in h.items():
        if k != "__metadata__":
            a, e = v["data_offsets"]; out[k] = np.frombuffer(b[8 + n + a:8 + n + e], "<f4").reshape(v["shape"])
    return out
def st_write(path, d):
    hdr, off, blobs = {}, 0, []
    for k, a in d.items():
        bb = np.ascontiguousarray(a, "<f4").tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(bb)]}
        off += len(bb); blobs.append(bb)
    h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
d = st_read(os.path.join("l.db.blobs", ck))
st_write("in1.safetensors", {"quant_inps": d["h_train"], "fp_inps": d["h_fpe"], "stat_inps": d["h_fp"]})
r = subprocess.run([sys.executable, oracle, "train", "--model", demo + "/model", "--calib", demo + "/calib.safetensors",
                    "--layer", "1", "--layers", "2", "--bits", "4,8", "--epochs", "2", "--inputs", "in1.safetensors",
                    "--dtype", "float32", "--out", "o1.json"], capture_output=True, text=True)
if r.returncode != 0:
    print("not ok - the oracle ran: " + r.stderr[-300:].replace("\n", " "))
    sys.exit(0)
L = [x for x in json.load(open("o1.json"))["layers"] if x["layer"] == 1][0]
a, b = np.array(L["losses"]), np.array(tr["losses"])
# the first epoch's 4 losses differ by float rounding alone; after an AdamW
# step, a factor that moved by a last place can carry an activation across
# a rounding boundary of its grid, and the difference grows: measured 1.7e-5
# in the second epoch (1.8e-7 in the first) once masq ran its FP linears one
# GEMM a sequence, so each epoch has its own bound
r = np.abs(a - b) / np.abs(a)
e1, e2 = float(np.max(r[:4])), float(np.max(r))
print("%sok - layer 1's first 4 losses = the oracle's on the same inputs (worst rel %.2e <= 2e-6)" % ("" if e1 <= 2e-6 else "not ", e1))
print("%sok - ... and all 8, after the first steps (worst rel %.2e <= 1e-4)" % ("" if e2 <= 1e-4 else "not ", e2))
# the factors after both epochs carry the second epoch's flips: measured
# 6.4e-6 with whole-batch FP linears, 5.4e-5 with one GEMM a sequence, on
# the AVX2 and the AVX-512 kernels alike
f = st_read(os.path.join("l.db.blobs", tr["factors"]))
names = {"q_proj": "self_attn_q_proj", "k_proj": "self_attn_k_proj", "v_proj": "self_attn_v_proj",
         "o_proj": "self_attn_o_proj", "gate_proj": "mlp_gate_proj", "up_proj": "mlp_up_proj"}
worst = 0.0
for k, g in names.items():
    for m in ("text", "vision", "audio"):
        x = f["s.%s.%s" % (k, m)]; y = np.array(L["factors"]["lin.%s.%s_smooth_scale" % (g, m)])
        worst = max(worst, float(np.max(np.abs(x - y)) / np.max(np.abs(y))))
print("%sok - layer 1's 18 learned factors = the oracle's (worst rel %.2e <= 1e-4)" % ("" if worst <= 1e-4 else "not ", worst))
EOF
	tap_include oracle.tap
	check "... the oracle's comparisons ran" grep -q "^ok - layer 1's 18" oracle.tap
else
	ok "# SKIP no numpy: the oracle cross-check"
	ok "# SKIP no numpy"
	ok "# SKIP no numpy"
fi

# Replay: exact here, within tolerance where the kernels differ (learning
# checked loosely, then continued from the recorded factors)
check "the learned sessions replay exactly" sh -c "'$MASQ' replay --session 1 --db l.db >/dev/null 2>&1 &&
	'$MASQ' replay --session 2 --db l.db >/dev/null 2>&1 && '$MASQ' replay --session 3 --db l.db >/dev/null 2>&1"
"$MASQ" replay --session 2 --db l.db --json > r2.json 2>/dev/null
check "... every train-layer compared, no factors adopted in exact mode" "$py" -c "
import json; d=json.load(open('r2.json')); assert d['mode']=='exact' and d['result']=='match' and d['adopted_factors']==0, d"
if grep -qw avx /proc/cpuinfo 2>/dev/null; then
	native=$("$py" -c "import json,subprocess,sys; print(json.loads(subprocess.run([sys.argv[1],'sessions','show','1','--db','l.db','--json'],capture_output=True,text=True).stdout)['environment']['blas']['corename'])" "$MASQ")
	other=Sandybridge
	[ "$native" = Sandybridge ] && other=Nehalem
	OPENBLAS_CORETYPE=$other "$MASQ" run $T --method mas-cmc --db k.db > /dev/null 2>&1
	"$MASQ" replay --db k.db --tolerance --json > rk.json 2>/dev/null
	check "a learned session recorded with the $other kernels replays here within tolerance" "$py" -c "
import json; d=json.load(open('rk.json')); assert d['mode']=='tolerance' and d['result']=='match', d
t=d['tolerances']; assert t['learned']==0.1 and t['learned_sqnr_db']==0.5, t
dev=d['max_deviation']
# where learning moved, the replay went on from the recorded factors
if dev['learned'] is not None and dev['learned']['value'] > 0: assert d['adopted_factors'] >= 1, d
"
	diag "learned deviation across kernel sets: $(jget rk.json "(d['max_deviation']['learned'], d['max_deviation']['learned_sqnr_db'], d['adopted_factors'])")"
else
	ok "# SKIP no AVX: no second kernel set"
fi
done_testing
