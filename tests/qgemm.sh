#!/bin/sh
# qgemm.sh: the quantized linears as integer GEMMs (core/igemm.c) and CMC in
# single precision, end to end on the tiny demo: each against the product
# it replaced (MASQ_QGEMM=float, --cmc-precision f64, --whitener eig,
# --rsvd householder) within named tolerances, what the session records of
# them, how replay treats a session recorded the other way, and masq eval
# running the export the way the session measured it.  test_igemm.c and
# test_cmc.c check the kernels.
. "$srcdir/lib.sh"
w=$(workdir qgemm)
py=${PYTHON3:-}
[ -n "$py" ] && [ -x "$py" ] || skip_all "no python3"
"$MASQ" demo "$w/d" --preset tiny > /dev/null 2>&1 || { echo "Bail out! masq demo failed"; exit 99; }
M=$w/d/model C=$w/d/calib.safetensors

# SQNR_TOL: the integer and float products differ by the float product's
# rounding (1e-7 relative), and where that moves a value across a rounding
# edge of the next quantizer, by one level.  Through the layers that moves
# an SQNR by a few thousandths of a dB at most: measured 2e-5 dB with
# OpenBLAS's AVX2 kernels (Zen 3, Zen 5 under Haswell), 1.6e-3 dB at W8A8
# with its AVX-512 ones (Cooperlake, Zen 5), where one more W8 level flips.
SQNR_TOL=0.005
close() { # A.json B.json tol: every summary and per-layer SQNR within tol dB
	"$py" - "$1" "$2" "$3" <<'PY'
import json, sys
a, b, tol = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), float(sys.argv[3])
worst = 0.0
for la, lb in zip(a["layers"], b["layers"]):
    for k in la["sqnr_db"]:
        if la["sqnr_db"][k] is not None:
            worst = max(worst, abs(la["sqnr_db"][k] - lb["sqnr_db"][k]))
print("# worst SQNR difference %.2e dB" % worst)
sys.exit(0 if worst <= tol and len(a["layers"]) == len(b["layers"]) else 1)
PY
}
for wb in 8 4; do
	# F32 compensation: the export then holds what the session measured
	MASQ_QGEMM=float "$MASQ" run --model "$M" --calib "$C" --method mas-cmc --epochs 0 --wbits $wb --abits 8 \
		--cmc-dtype f32 --db "$w/float$wb.db" --json > "$w/float$wb.json" 2>"$w/float$wb.err"
	"$MASQ" run --model "$M" --calib "$C" --method mas-cmc --epochs 0 --wbits $wb --abits 8 \
		--cmc-dtype f32 --db "$w/int$wb.db" --json > "$w/int$wb.json" 2>"$w/int$wb.err"
	check "W${wb}A8 mas-cmc: the integer GEMM's SQNRs equal the float product's within $SQNR_TOL dB" \
		close "$w/float$wb.json" "$w/int$wb.json" $SQNR_TOL
done
check "the session records how its quantized linears multiplied (qgemm int8, float under MASQ_QGEMM=float)" sh -c "
	'$MASQ' sessions show 1 --db '$w/int8.db' --json | grep -q '\"qgemm\": *\"int8\"' &&
	'$MASQ' sessions show 1 --db '$w/float8.db' --json | grep -q '\"qgemm\": *\"float\"'"
"$MASQ" replay --db "$w/float8.db" > "$w/rf.out" 2>&1; rc=$?
check "a session recorded with the float product replays in tolerance mode, naming qgemm (exit $rc)" sh -c "
	test $rc -eq 0 && grep -q 'qgemm: recorded float, here int8' '$w/rf.out' &&
	grep -q 'every recorded result matches (tolerance mode' '$w/rf.out'"
MASQ_QGEMM=float "$MASQ" replay --db "$w/float8.db" > "$w/rf2.out" 2>&1; rc=$?
check "... and exactly under MASQ_QGEMM=float (exit $rc)" sh -c "
	test $rc -eq 0 && grep -q 'every recorded result matches (exact' '$w/rf2.out'"
"$MASQ" replay --db "$w/int8.db" > "$w/ri.out" 2>&1; rc=$?
check "the integer session replays exactly (exit $rc)" sh -c "
	test $rc -eq 0 && grep -q 'every recorded result matches (exact' '$w/ri.out'"
# weight-only has no integer path: the two agree to the bit
MASQ_QGEMM=float "$MASQ" run --model "$M" --calib "$C" --method rtn --wbits 4 --abits 16 --no-db --json \
	> "$w/wo-f.json" 2>/dev/null
"$MASQ" run --model "$M" --calib "$C" --method rtn --wbits 4 --abits 16 --no-db --json > "$w/wo-i.json" 2>/dev/null
check "W4A16 keeps the float product: its SQNRs are identical either way" close "$w/wo-f.json" "$w/wo-i.json" 0
# masq eval runs the masquant export the way the session measured it
"$MASQ" export --db "$w/int8.db" --format masquant --out "$w/mq" > /dev/null 2>&1
"$MASQ" eval --model "$w/mq" --reference "$M" --calib "$C" --json > "$w/eval.json" 2>"$w/eval.err"
check "masq eval of the W8A8 masquant export reproduces the session's SQNRs to 1e-6 relative" "$py" -c "
import json, sys
e = json.load(open('$w/eval.json'))['summary']['sqnr_db']; r = json.load(open('$w/int8.json'))['summary']['sqnr_db']
sys.exit(0 if all(abs(e[m] - r[m]) <= 1e-6 * abs(r[m]) for m in ('text', 'vision', 'audio')) else 1)"

# CMC in single precision against double
"$MASQ" run --model "$M" --calib "$C" --method mas-cmc --epochs 0 --cmc-precision f64 --cmc-dtype f32 --no-db \
	--json > "$w/f64.json" 2>/dev/null
check "--cmc-precision f32 (the default) agrees with f64 within 0.01 dB" close "$w/int4.json" "$w/f64.json" 0.01
check "... and within 1e-4 in CMC's relative error" sh -c "'$py' -c \"
import json, sys
a, b = json.load(open('$w/int4.json')), json.load(open('$w/f64.json'))
worst = 0.0
for la, lb in zip(a['layers'], b['layers']):
    for ka, kb in zip(la['linears'], lb['linears']):
        for m, d in (ka.get('cmc') or {}).items():
            if d and d.get('rel_err') is not None:
                worst = max(worst, abs(d['rel_err'] - kb['cmc'][m]['rel_err']))
print('# worst rel_err difference %.2e' % worst)
sys.exit(0 if worst <= 1e-4 else 1)\""
check "the session records cmc_precision f32; a bad --cmc-precision is a usage error" sh -c "
	'$MASQ' sessions show 1 --db '$w/int8.db' --json | grep -q '\"cmc_precision\": *\"f32\"' &&
	! '$MASQ' run --model '$M' --calib '$C' --cmc-precision f16 --no-db > /dev/null 2> '$w/bad.err' &&
	grep -q 'cmc-precision is f32 or f64' '$w/bad.err'"

# CMC's whitener: the Cholesky factor (the default) against the
# eigendecomposition.  T^T T is the same matrix; the floors differ near
# them, and the rounding differs: measured 2e-6 dB and 6e-10 in rel_err
# on this demo (AVX-512, SkylakeX kernels).
"$MASQ" run --model "$M" --calib "$C" --method mas-cmc --epochs 0 --whitener eig --cmc-dtype f32 \
	--db "$w/eig.db" --json > "$w/eig.json" 2>/dev/null
check "--whitener cholesky (the default) agrees with eig within 0.001 dB" close "$w/int4.json" "$w/eig.json" 0.001
check "... and within 1e-5 in CMC's relative error; only eig counts floored eigenvalues" sh -c "'$py' -c \"
import json, sys
a, b = json.load(open('$w/int4.json')), json.load(open('$w/eig.json'))
worst, counts = 0.0, True
for la, lb in zip(a['layers'], b['layers']):
    for ka, kb in zip(la['linears'], lb['linears']):
        for m, d in (ka.get('cmc') or {}).items():
            if d and d.get('rel_err') is not None:
                worst = max(worst, abs(d['rel_err'] - kb['cmc'][m]['rel_err']))
                counts = counts and d['floored_eigenvalues'] is None and isinstance(kb['cmc'][m]['floored_eigenvalues'], int)
print('# worst rel_err difference %.2e' % worst)
sys.exit(0 if worst <= 1e-5 and counts and a['cmc_whitener'] == 'cholesky' and b['cmc_whitener'] == 'eig' else 1)\""
check "the session records cmc_whitener cholesky, an eig session none (as those before the setting)" sh -c "
	'$MASQ' sessions show 1 --db '$w/int4.db' --json | grep -q '\"cmc_whitener\": *\"cholesky\"' &&
	! '$MASQ' sessions show 1 --db '$w/eig.db' --json | grep -q 'cmc_whitener'"
"$MASQ" replay --db "$w/eig.db" > "$w/re.out" 2>&1; rc=$?
check "the eig session replays exactly (exit $rc)" sh -c "
	test $rc -eq 0 && grep -q 'every recorded result matches (exact' '$w/re.out'"
check "a bad --whitener is a usage error, and so is --whitener where nothing compensates" sh -c "
	! '$MASQ' run --model '$M' --calib '$C' --whitener qr --no-db > /dev/null 2> '$w/bad2.err' &&
	grep -q 'whitener is cholesky or eig' '$w/bad2.err' &&
	! '$MASQ' run --model '$M' --calib '$C' --method mas --whitener eig --no-db > /dev/null 2> '$w/bad3.err' &&
	grep -q 'only mas-cmc compensates' '$w/bad3.err'"

# The randomized SVD's steps by Gram matrices (CholeskyQR2, the small SVD
# from B B^T; the default) against Householder QR and dgesdd, forced on
# this demo (--svd randomized: its linears are too small for auto to pick
# the randomized SVD).  The same subspace, so the same factors up to
# rounding: measured 3e-8 dB and 6e-13 in rel_err here, 7e-4 dB on the
# 3b preset (AVX-512, Cooperlake kernels).
for v in gram householder; do
	"$MASQ" run --model "$M" --calib "$C" --method mas-cmc --epochs 0 --svd randomized --rsvd $v --cmc-dtype f32 \
		--db "$w/rsvd-$v.db" --json > "$w/rsvd-$v.json" 2>"$w/rsvd-$v.err"
done
check "--rsvd gram agrees with householder within 0.001 dB" close "$w/rsvd-gram.json" "$w/rsvd-householder.json" 0.001
check "... and within 1e-6 in CMC's relative error, both computed with the randomized SVD" sh -c "'$py' -c \"
import json, sys
a, b = json.load(open('$w/rsvd-gram.json')), json.load(open('$w/rsvd-householder.json'))
worst, n = 0.0, 0
for la, lb in zip(a['layers'], b['layers']):
    for ka, kb in zip(la['linears'], lb['linears']):
        for m, d in (ka.get('cmc') or {}).items():
            if d and d.get('rel_err') is not None:
                worst = max(worst, abs(d['rel_err'] - kb['cmc'][m]['rel_err']))
                n += 1
print('# worst rel_err difference %.2e over %d' % (worst, n))
sys.exit(0 if worst <= 1e-6 and n > 0 and a['cmc_rsvd'] == 'gram' and b['cmc_rsvd'] == 'householder' else 1)\""
check "the default is gram: a run without --rsvd measures what --rsvd gram does" sh -c "
	'$MASQ' run --model '$M' --calib '$C' --method mas-cmc --epochs 0 --svd randomized --cmc-dtype f32 --no-db \
		--json > '$w/rsvd-def.json' 2>/dev/null && '$py' -c \"
import json, sys
a, b = json.load(open('$w/rsvd-def.json')), json.load(open('$w/rsvd-gram.json'))
sys.exit(0 if [a['summary'][k] for k in ('sqnr_db', 'mae')] == [b['summary'][k] for k in ('sqnr_db', 'mae')] and a['cmc_rsvd'] == 'gram' else 1)\""
check "the session records cmc_rsvd gram, a householder session none (as those before the setting)" sh -c "
	'$MASQ' sessions show 1 --db '$w/rsvd-gram.db' --json | grep -q '\"cmc_rsvd\": *\"gram\"' &&
	! '$MASQ' sessions show 1 --db '$w/rsvd-householder.db' --json | grep -q 'cmc_rsvd'"
for v in gram householder; do
	"$MASQ" replay --db "$w/rsvd-$v.db" > "$w/re-$v.out" 2>&1; rc=$?
	check "the $v session replays exactly (exit $rc)" sh -c "
		test $rc -eq 0 && grep -q 'every recorded result matches (exact' '$w/re-$v.out'"
done
check "a bad --rsvd is a usage error, and so is --rsvd where nothing compensates" sh -c "
	! '$MASQ' run --model '$M' --calib '$C' --rsvd lu --no-db > /dev/null 2> '$w/bad4.err' &&
	grep -q 'rsvd is gram or householder' '$w/bad4.err' &&
	! '$MASQ' run --model '$M' --calib '$C' --method sq --rsvd gram --no-db > /dev/null 2> '$w/bad5.err' &&
	grep -q 'only mas-cmc compensates' '$w/bad5.err'"
done_testing
