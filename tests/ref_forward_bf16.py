#!/usr/bin/python3
"""ref_forward_bf16.py: an independent numpy emulation of one Qwen2 /
Qwen2.5-VL text decoder layer computed in bfloat16 the way the reference
PyTorch code computes it (transformers, model loaded in torch.bfloat16, no
autocast, CPU, SDPA attention), and the TAP test that compares a bf16
forward of masq against it.

usage:
  ref_forward_bf16.py [--tol X] [--ratio R] [--attn flash|math] MODEL CALIB H_BF16
  ref_forward_bf16.py --self-test [--attn flash|math] [MODEL CALIB]

H_BF16 holds layers.N.output [T, hidden] (F32 holding bf16 values, or BF16)
for N = 0 .. layers-1, as `masq forward` writes them.  Layer N is recomputed
from H_BF16's layer N-1 output (layer 0 from the calibration set's
inputs_embeds rounded to bf16), once in the bf16 emulation below ("bf16-ref")
and once in float64 by ref_forward.py's layer_forward ("f64-ref", the same
bf16 weights and input).  Per layer, two TAP checks:
  - every value of H_BF16's layer N output is bf16-representable (the low
    16 bits of its float32 are zero);
  - masq vs bf16-ref rel RMS error <= TOL (default 2e-3) and <= R (default
    0.5) x the "bf16 effect" (f64-ref vs bf16-ref rel RMS error): masq's
    output is clearly closer to a bf16 computation than to an exact one.
    On the tiny demo a torch bf16 layer sits at ~0.004 x the effect and one
    rounding point done differently (bias rounded apart, silu rounded per
    op, RMSNorm rounded once, float32 RoPE tables, attention weights not
    rounded) at 0.1 .. 0.35 x: --ratio 0.05 tells those apart, 0.5 does
    not.
Diagnostics: rel max err (max|a-b|/max|a|), rel RMS err, the fraction of
elements more than one bf16 ulp (of the bf16-ref value) apart, for masq vs
bf16-ref and f64-ref vs bf16-ref, and masq vs f64-ref.

--self-test checks the bf16 rounding and the building blocks on hand-computed
cases with numpy only; if torch imports, it also compares the emulation with
a torch bfloat16 implementation of the layer written after transformers'
code (random linears, a random layer, and every layer of MODEL CALIB when
given); without torch that part prints "# SKIP".  The plan comes first: the
output is collected and printed when all checks have run.

The rounding model (transformers' modeling_qwen2.py / modeling_qwen2_5_vl.py,
torch 2.x CPU kernels):
  bf16(x)   round-to-nearest-even of float32 to its top 16 bits, NaN -> 0x7FC0
            (c10::round_to_nearest_even).
  residual  h is bf16; h + attn and h + mlp are bf16 tensor adds (computed in
            float32, one rounding).
  RMSNorm   Qwen2RMSNorm.forward: x.to(float32); variance = pow(2).mean(-1) in
            float32 (sum then division by N); x * rsqrt(variance + eps) in
            float32; .to(bf16); weight (bf16) * that, one bf16 rounding.
  linear    nn.Linear on bf16: products exact, float32 accumulation, bias
            added in float32, ONE rounding to bf16 (addmm: oneDNN or
            cpublas with opmath float).  Emulated as the float64 dot product
            rounded to float32, + bias in float32, then bf16.
  RoPE      inv_freq = 1 / base ** (arange(0, dim, 2).float() / dim) in
            float32; freqs = inv_freq * position.float() in float32;
            cos/sin of those in float32 (* attention_scaling = 1.0), then
            .to(bf16); Qwen2.5-VL takes frequency i's position row from
            mrope_section (apply_multimodal_rotary_pos_emb).  q * cos,
            rotate_half(q) * sin and their sum are bf16 tensor ops, each
            rounded.
  attention torch.nn.functional.scaled_dot_product_attention, which on CPU
            in bf16 takes the flash kernel (sdp_utils_cpp.cpp: flash first;
            cpu/FlashAttentionKernel.cpp): s = (q . k) in float32 from bf16
            q, k, then * scale in float32, causal; per kv block of 512 keys
            (online softmax), e = exp(s - running max) in float32, the sum of
            e in float32, but e ROUNDED TO BF16 before the e . v product
            (qk_reduced_data), e . v accumulated in float32, rescaled by
            exp(old max - new max) between blocks; out = dst * (1 / sum) in
            float32, one rounding to bf16.  --attn math drops the rounding of
            e (softmax fully in float32, as SDPA's math fallback does with
            bf16 inputs upcast, torch >= 2.5).  Each sequence is its own
            batch-1 call (attention_mask None -> is_causal=True); GQA: kv head
            h // (heads / kv_heads).
  MLP       gate, up: linears; act = silu(gate) in float32 (x / (1 +
            exp(-x)), torch 2.x silu_kernel for reduced floats), one bf16
            rounding; act * up bf16; down linear.

Only numpy and the standard library are needed outside the torch part; the
file readers and the float64 layer are ref_forward.py's.
"""

import json
import math
import os
import sys
import types

import numpy as np

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_forward as rf  # noqa: E402

# Default bound of masq vs bf16-ref rel RMS.  On the tiny demo and its
# rope1d / nopos variants the bf16 effect (f64-ref vs bf16-ref) is 2.1e-3 ..
# 2.7e-3 rel RMS, and a torch bf16 layer agrees with this emulation to
# 1e-6 .. 3e-5 (see --self-test and the "#" lines of a run).
TOL = 2e-3
RATIO = 0.5
KV_SPLIT = 512      # FlashAttentionKernel.cpp: kv_split_size is 512 for all q sizes
TEXT_TYPES = ("qwen2", "qwen2_vl", "qwen2_vl_text", "qwen2_5_vl", "qwen2_5_vl_text",
              "qwen2_5_omni", "qwen2_5_omni_thinker", "qwen2_5_omni_text")
VL_TYPES = ("qwen2_vl", "qwen2_vl_text", "qwen2_5_vl", "qwen2_5_vl_text",
            "qwen2_5_omni", "qwen2_5_omni_thinker", "qwen2_5_omni_text")

# ---------------------------------------------------------------------------
# bf16 rounding, on the float32 bits


def f32(x):
    return np.asarray(x, dtype=np.float32)


def bf16_bits(x):
    """uint16 bf16 bit patterns of float32 x: round to nearest, ties to even
    (add 0x7FFF plus the lowest kept bit, drop 16 bits); NaN -> 0x7FC0."""
    u = np.ascontiguousarray(f32(x)).view(np.uint32).astype(np.uint64)
    r = ((u + np.uint64(0x7FFF) + ((u >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16))
    r = r.astype(np.uint16)
    nan = np.isnan(f32(x))
    if np.any(nan):
        r = np.where(nan, np.uint16(0x7FC0), r)
    return r


def from_bf16_bits(b):
    return (np.asarray(b, np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def bf16(x):
    """float32 x rounded to bf16, returned as float32 (float64 input is first
    rounded to float32, as a float32 result would be)."""
    return from_bf16_bits(bf16_bits(x)).reshape(np.shape(x))


def is_bf16(x):
    """True where float32 x has its low 16 bits zero."""
    return (np.ascontiguousarray(f32(x)).view(np.uint32) & np.uint32(0xFFFF)) == 0


def ulp_bf16(a):
    """The bf16 spacing at float32 a: 2^(e - 7) in a's binade, 2^-133 at
    zero and in the subnormals; inf/NaN give inf."""
    e = (np.ascontiguousarray(f32(a)).view(np.uint32) >> np.uint32(23)) & np.uint32(0xFF)
    e = e.astype(np.int64)
    out = np.ldexp(1.0, np.maximum(e, 1) - 127 - 7)
    return np.where(e == 255, np.inf, out)


# ---------------------------------------------------------------------------
# the layer in bf16


def mul(a, b):
    """bf16 * bf16 as a torch bf16 tensor op: float32 product, one rounding."""
    return bf16(f32(a) * f32(b))


def add(a, b):
    return bf16(f32(a) + f32(b))


def linear(x, w, b=None):
    """x [T, in] bf16, w [out, in] bf16, b [out] bf16 or None."""
    acc = f32(np.asarray(x, np.float64) @ np.asarray(w, np.float64).T)
    if b is not None:
        acc = acc + f32(b)
    return bf16(acc)


def rmsnorm(x, w, eps):
    x = f32(x)
    ss = f32(np.sum(np.square(x.astype(np.float64)), axis=-1, keepdims=True))
    var = ss / np.float32(x.shape[-1])
    r = np.float32(1.0) / np.sqrt(var + np.float32(eps))
    return mul(w, bf16(x * r))


def inv_freq_f32(head_dim, theta):
    """1.0 / (base ** (arange(0, dim, 2).float() / dim)) in float32, pow taken
    in float64 and rounded (torch's powf is within an ulp of that)."""
    ex = np.arange(0, head_dim, 2).astype(np.float32) / np.float32(head_dim)
    p = f32(np.float64(np.float32(theta)) ** ex.astype(np.float64))
    return np.float32(1.0) / p


def rope_tables(pos, head_dim, theta, mrope):
    """cos, sin [T, head_dim] bf16 for positions pos [3, T]; frequency i takes
    its position row by mrope section (row 0 without mrope)."""
    half = head_dim // 2
    rows = np.zeros(half, np.int64)
    if mrope is not None:
        s0, s1, _ = mrope
        rows[s0:s0 + s1] = 1
        rows[s0 + s1:] = 2
    inv = inv_freq_f32(head_dim, theta)
    p = f32(np.asarray(pos)[rows, :].T)                  # [T, half], exact integers
    ang = p * inv                                        # float32 product
    c = bf16(f32(np.cos(ang.astype(np.float64))))
    s = bf16(f32(np.sin(ang.astype(np.float64))))
    return np.concatenate([c, c], axis=1), np.concatenate([s, s], axis=1)


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rope(x, cos, sin):
    """x [T, heads, hd] bf16: (x * cos) + (rotate_half(x) * sin), each op bf16."""
    return add(mul(x, cos[:, None, :]), mul(rotate_half(x), sin[:, None, :]))


def _exp32(x):
    """float32 exp of float32 x (float64 exp rounded; -inf -> 0)."""
    with np.errstate(over="ignore"):
        return f32(np.exp(f32(x).astype(np.float64)))


def _head_attention(q, k, v, scale, mode):
    """One head of one sequence: q [n, hd], k, v [n, hd] bf16 -> [n, hd] bf16."""
    n = q.shape[0]
    s = f32(q.astype(np.float64) @ k.astype(np.float64).T) * scale     # float32
    causal = np.tril(np.ones((n, n), bool))
    s = np.where(causal, s, np.float32(-np.inf))
    v64 = v.astype(np.float64)
    if mode == "math":
        mx = s.max(axis=1, keepdims=True)
        e = _exp32(s - mx)
        p = e / f32(np.sum(e.astype(np.float64), axis=1, keepdims=True))
        return bf16(f32(p.astype(np.float64) @ v64))
    # flash: kv blocks of KV_SPLIT keys, online softmax, e rounded to bf16
    m = np.full((n, 1), -np.inf, np.float32)
    tot = np.zeros((n, 1), np.float32)
    dst = np.zeros(q.shape, np.float32)
    for b0 in range(0, n, KV_SPLIT):
        b1 = min(n, b0 + KV_SPLIT)
        act = np.arange(n) >= b0                          # rows that see this block
        sb = s[act, b0:b1]
        new_m = np.maximum(m[act], sb.max(axis=1, keepdims=True))
        e = _exp32(sb - new_m)
        bsum = f32(np.sum(e.astype(np.float64), axis=1, keepdims=True))
        pv = bf16(e).astype(np.float64) @ v64[b0:b1]
        if b0 == 0:
            tot[act] = bsum
            dst[act] = f32(pv)
        else:
            et = _exp32(m[act] - new_m)
            tot[act] = bsum + et * tot[act]
            dst[act] = f32((dst[act] * et).astype(np.float64) + pv)
        m[act] = new_m
    return bf16(dst * (np.float32(1.0) / tot))


def attention(q, k, v, seq_lens, scale, mode="flash"):
    """q [T, H, hd], k, v [T, KV, hd] bf16 -> [T, H, hd] bf16; causal within
    each sequence (each its own batch-1 SDPA call)."""
    T, H, hd = q.shape
    g = H // k.shape[1]
    out = np.zeros(q.shape, np.float32)
    a = 0
    for n in seq_lens:
        n = int(n)
        for h in range(H):
            out[a:a + n, h] = _head_attention(q[a:a + n, h], k[a:a + n, h // g],
                                              v[a:a + n, h // g], scale, mode)
        a += n
    return out


def silu(x):
    """torch 2.x silu on bf16: float(x) / (1 + exp(-float(x))) in float32."""
    x = f32(x)
    return bf16(x / (np.float32(1.0) + _exp32(-x)))


def sdpa_scale(head_dim):
    """HF passes scaling = head_dim ** -0.5 (a double); the kernel uses it as
    float (sdp::calculate_scale(...).as_float_unchecked())."""
    return np.float32(head_dim ** -0.5)


def layer_bf16(m, w, h, cos, sin, seq_lens, mode="flash"):
    """One decoder layer on bf16 h [T, hidden]; w holds bf16 float32 weights."""
    T = h.shape[0]
    H, KV, hd = m.n_heads, m.n_kv, m.head_dim
    n1 = rmsnorm(h, w["in_norm"], m.eps)
    q = linear(n1, w["q"], w["bq"]).reshape(T, H, hd)
    k = linear(n1, w["k"], w["bk"]).reshape(T, KV, hd)
    v = linear(n1, w["v"], w["bv"]).reshape(T, KV, hd)
    q = apply_rope(q, cos, sin)
    k = apply_rope(k, cos, sin)
    att = attention(q, k, v, seq_lens, sdpa_scale(hd), mode).reshape(T, H * hd)
    h = add(h, linear(att, w["o"]))
    n2 = rmsnorm(h, w["post_norm"], m.eps)
    act = mul(silu(linear(n2, w["gate"])), linear(n2, w["up"]))
    return add(h, linear(act, w["down"]))


def bf16_weights(w):
    """Layer weights (float64 from ref_forward) as bf16 float32: what
    from_pretrained(torch_dtype=bfloat16) holds (a no-op for BF16 files)."""
    return {k: (bf16(f32(v)) if v is not None else None) for k, v in w.items()}


# ---------------------------------------------------------------------------
# what this oracle covers


class Unsupported(Exception):
    pass


def check_supported(model_dir, m):
    with open(os.path.join(model_dir, "config.json")) as f:
        raw = json.load(f)
    c = rf.text_config(raw)
    mt = c.get("model_type") or raw.get("model_type")
    why = []
    if mt not in TEXT_TYPES:
        why.append("model_type %r (covers %s)" % (mt, ", ".join(TEXT_TYPES)))
    if c.get("hidden_act", "silu") != "silu":
        why.append("hidden_act %r (silu only)" % c.get("hidden_act"))
    rs = c.get("rope_scaling") or {}
    rt = rs.get("rope_type", rs.get("type", "default"))
    if rt not in ("default", "mrope"):
        why.append("rope type %r (default and mrope only)" % rt)
    if float(c.get("partial_rotary_factor", 1.0)) != 1.0:
        why.append("partial_rotary_factor %s" % c.get("partial_rotary_factor"))
    if c.get("use_sliding_window"):
        why.append("use_sliding_window")
    lt = c.get("layer_types")
    if lt and any(t != "full_attention" for t in lt):
        why.append("layer_types other than full_attention")
    if mt in VL_TYPES and m.head_dim * m.n_heads != m.hidden:
        why.append("head_dim %d but hidden/heads %d (Qwen2.5-VL uses the latter)"
                   % (m.head_dim, m.hidden // m.n_heads))
    for s in ("self_attn.q_norm.weight", "self_attn.k_norm.weight"):
        if m.prefix + "0." + s in m.where:
            why.append("%s present (Qwen3-style q/k norm: out of scope)" % s)
    if why:
        raise Unsupported("; ".join(why))


# ---------------------------------------------------------------------------
# output


class Tap:
    """TAP collected in memory, printed with the plan first."""

    def __init__(self):
        self.lines = []
        self.n = 0
        self.failed = 0

    def check(self, cond, msg):
        self.n += 1
        cond = bool(cond)
        if not cond:
            self.failed += 1
        self.lines.append("%s %d - %s" % ("ok" if cond else "not ok", self.n, msg))
        return cond

    def diag(self, msg):
        for line in str(msg).splitlines():
            self.lines.append("# " + line)

    def flush(self):
        print("1..%d" % self.n)
        for line in self.lines:
            print(line)
        sys.stdout.flush()


def metrics(ref, got):
    """(rel max, rel rms, fraction more than one bf16 ulp of ref apart),
    ref the bf16 reference."""
    ref64, got64 = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    d = got64 - ref64
    rel_max = np.max(np.abs(d)) / max(1e-30, np.max(np.abs(ref64)))
    rel_rms = math.sqrt(np.sum(d * d) / max(1e-300, np.sum(ref64 * ref64)))
    frac = float(np.mean(np.abs(d) > ulp_bf16(ref)))
    return float(rel_max), rel_rms, frac


def fmt(mt):
    return "rel max %.2e, rel rms %.2e, >1ulp %.2e" % mt


# ---------------------------------------------------------------------------
# the comparison against masq


def run_case(tap, model_dir, calib_path, h_path, tol, mode, ratio=RATIO):
    try:
        m = rf.Model(model_dir)
        check_supported(model_dir, m)
        c = rf.Calib(calib_path)
        hf = rf.StFile(h_path)
    except Unsupported as e:
        tap.check(False, "%s: not a configuration this oracle covers: %s" % (model_dir, e))
        return
    except Exception as e:  # a broken input is a failed test, not a traceback
        tap.check(False, "load model, calibration and masq output: %s: %s"
                  % (type(e).__name__, e))
        return
    want = ["layers.%d.output" % n for n in range(m.n_layers)]
    bad = [n for n in want if n not in hf.entries or hf.entries[n][0] not in ("F32", "BF16")
           or hf.entries[n][1] != [c.T, m.hidden]]
    if not tap.check(not bad and c.hidden == m.hidden,
                     "masq wrote %d layer outputs [%d, %d] F32 or BF16%s"
                     % (m.n_layers, c.T, m.hidden,
                        (" (bad: %s)" % ", ".join(bad[:3])) if bad else "")):
        return
    tap.diag("%d tokens in %d sequences %s, position rows %d, mrope %s, heads %d/%d x %d, "
             "attention %s, tol %.1e, ratio %.2f"
             % (c.T, len(c.seq_lens), c.seq_lens.tolist()[:8], c.pos_rows, m.mrope,
                m.n_heads, m.n_kv, m.head_dim, mode, tol, ratio))
    cos, sin = rope_tables(c.pos, m.head_dim, m.theta, m.mrope)
    cs64 = rf.rope_tables(c.pos, m.head_dim, m.theta, m.mrope)
    prev = bf16(f32(c.embeds))
    nr = int(np.sum(~is_bf16(f32(c.embeds))))
    if nr:
        tap.diag("inputs_embeds: %d of %d values not bf16, rounded" % (nr, prev.size))
    for n in range(m.n_layers):
        w64 = m.layer(n)
        wb = bf16_weights(w64)
        nw = sum(int(np.sum(wb[k] != f32(v))) for k, v in w64.items() if v is not None)
        if nw:
            tap.diag("layer %d: %d weights not bf16 in the checkpoint, rounded" % (n, nw))
        got = hf.get("layers.%d.output" % n)
        rep = is_bf16(got)
        tap.check(np.all(rep), "layer %d: masq output bf16-representable (%d of %d values not)"
                  % (n, int(np.sum(~rep)), rep.size))
        ref = layer_bf16(m, wb, prev, cos, sin, c.seq_lens, mode)
        w64b = {k: (v.astype(np.float64) if v is not None else None) for k, v in wb.items()}
        r64 = rf.layer_forward(m, w64b, prev.astype(np.float64), c.pos, c.seq_lens, cs64)
        mg, me = metrics(ref, got), metrics(ref, r64)
        d64 = got.astype(np.float64) - r64
        rms64 = math.sqrt(np.sum(d64 * d64) / np.sum(r64 * r64))
        tap.diag("layer %d: masq vs bf16-ref: %s; masq vs f64-ref rel rms %.2e; max|h| %.4g"
                 % (n, fmt(mg), rms64, np.max(np.abs(ref))))
        tap.diag("layer %d: bf16 effect (f64-ref vs bf16-ref): %s; masq's rel rms is %.2g x it"
                 % (n, fmt(me), mg[1] / max(1e-300, me[1])))
        ok = np.all(np.isfinite(got)) and mg[1] <= tol and mg[1] <= ratio * me[1]
        tap.check(ok, "layer %d: masq vs bf16-ref rel rms %.2e <= %.0e and <= %.2f x bf16 "
                  "effect %.2e (= %.2e)" % (n, mg[1], tol, ratio, me[1], ratio * me[1]))
        # the next layer's input: masq's own output, as bf16
        prev = bf16(got)


# ---------------------------------------------------------------------------
# self-test, numpy part


def _f_of_bits(u):
    return np.array([u], np.uint32).view(np.float32)


def _round_cases(tap, cases, what):
    bad = []
    for inp, want in cases:
        got = int(bf16_bits(_f_of_bits(inp))[0])
        if got != want:
            bad.append("0x%08X -> 0x%04X, want 0x%04X" % (inp, got, want))
    tap.check(not bad, "self-test: bf16 rounding, %s%s" % (what, (": " + "; ".join(bad)) if bad else ""))


def self_test_numpy(tap, mode):
    # ties to even: 1 + 2^-8 is halfway between 1 (mantissa even) and
    # 1 + 2^-7; 1 + 3 * 2^-8 halfway between 1 + 2^-7 (odd) and 1 + 2^-6.
    _round_cases(tap, [(0x3F808000, 0x3F80), (0x3F818000, 0x3F82), (0x3F808001, 0x3F81),
                       (0x3F807FFF, 0x3F80), (0xBF808000, 0xBF80), (0xBF818000, 0xBF82),
                       (0x3F800000, 0x3F80), (0x40490FDB, 0x4049), (0x3DCCCCCD, 0x3DCD)],
                 "ties to even (1+2^-8 -> 1, 1+3*2^-8 -> 1+2^-6; pi, 0.1)")
    # overflow: FLT_MAX is above the halfway point between bf16's largest
    # finite 0x7F7F (odd) and 2^128, so it becomes inf; the tie 0x7F7F8000
    # too (to even = inf); the tie below 0x7F7E (even) stays finite.
    _round_cases(tap, [(0x7F7FFFFF, 0x7F80), (0xFF7FFFFF, 0xFF80), (0x7F7F8000, 0x7F80),
                       (0x7F7F7FFF, 0x7F7F), (0x7F7E8000, 0x7F7E), (0x7F800000, 0x7F80),
                       (0xFF800000, 0xFF80)],
                 "overflow to inf (FLT_MAX -> inf, +-inf kept)")
    # NaN: a payload only in the low 16 bits must not become inf, 0xFFFFFFFF
    # must not wrap to zero.
    _round_cases(tap, [(0x7FC00000, 0x7FC0), (0x7F800001, 0x7FC0), (0xFFFFFFFF, 0x7FC0),
                       (0x7FBFFFFF, 0x7FC0)],
                 "NaN stays NaN (0x7FC0, c10's round_to_nearest_even)")
    # subnormals: 0x8000 is halfway between 0 and the smallest bf16
    # subnormal 2^-133 (0x0001): to even = 0; 0x00018000 -> 0x0002; the
    # largest float32 subnormal rounds up to the smallest normal 2^-126.
    _round_cases(tap, [(0x00008000, 0x0000), (0x00008001, 0x0001), (0x00018000, 0x0002),
                       (0x00010000, 0x0001), (0x007FFFFF, 0x0080), (0x80008001, 0x8001),
                       (0x80000000, 0x8000), (0x00000000, 0x0000)],
                 "subnormals and signed zero")
    ok = (bf16(np.float32(np.ldexp(1.0, -133))) == np.ldexp(1.0, -133) and
          bf16(np.float32(3.4e38)) == np.inf and
          np.isnan(bf16(np.float32(np.nan))) and
          bf16(np.float32(1.00390625)) == 1.0 and bf16(np.float32(1.01171875)) == 1.015625)
    tap.check(ok, "self-test: bf16() values: 2^-133 kept, 3.4e38 -> inf, NaN, 1.00390625 -> 1, "
              "1.01171875 -> 1.015625")

    # against an independent formulation: for normal float32 x, q = 2^(e-7)
    # and x / q is exact in float64; np.round is half-to-even.
    rng = np.random.default_rng(11)
    u = rng.integers(0, 1 << 32, size=1 << 20, dtype=np.uint64).astype(np.uint32)
    x = u.view(np.float32)
    sel = np.isfinite(x) & (np.abs(x) >= np.float32(2.0 ** -126)) & \
        (np.abs(x) < np.float32(3.3e38))
    x = x[sel]
    x64 = x.astype(np.float64)
    q = np.ldexp(1.0, np.floor(np.log2(np.abs(x64))).astype(np.int64) - 7)
    want = np.round(x64 / q) * q
    got = bf16(x).astype(np.float64)
    tap.check(np.array_equal(got, want), "self-test: bf16() equals a float64 round-half-even "
              "formulation on %d random normal float32 values" % x.size)

    e = ulp_bf16(f32([1.0, 1.5, 2.0, 600.0, -0.75, 0.0, np.ldexp(1.0, -130), np.inf]))
    tap.check(e.tolist() == [2.0 ** -7, 2.0 ** -7, 2.0 ** -6, 4.0, 2.0 ** -8, 2.0 ** -133,
                             2.0 ** -133, np.inf],
              "self-test: bf16 ulp of 1, 1.5, 2, 600, -0.75, 0, a subnormal, inf")

    # linear: one rounding with the bias.  x [1, 2^-8], w [1, 1], b 2^-9:
    # exact 1 + 3 * 2^-9 -> 1 + 2^-7; rounding the product (the tie 1 + 2^-8
    # -> 1) and then adding the bias would give 1.
    y = linear(f32([[1.0, 2.0 ** -8]]), f32([[1.0, 1.0]]), f32([2.0 ** -9]))
    tap.check(y.tolist() == [[1.0078125]], "self-test: linear rounds once after the bias "
              "(1 + 2^-8 + 2^-9 -> %r, want 1.0078125)" % y.tolist()[0][0])

    # RMSNorm: x [3, 4], eps 0: x * rsqrt(12.5) = [0.84853, 1.13137] -> bf16
    # [217/256, 145/128]; times weight 1.5 -> 1.27148 -> 163/128 and 1.69922 =
    # 217.5/128 -> tie, to even 218/128.  Rounding x * r * w once would give
    # 1.6953125 for the second.
    y = rmsnorm(f32([[3.0, 4.0]]), f32([1.5, 1.5]), 0.0)
    tap.check(y.tolist() == [[1.2734375, 1.703125]],
              "self-test: RMSNorm rounds x * rsqrt(var + eps) to bf16 before the weight "
              "(%r, want [1.2734375, 1.703125])" % y.tolist()[0])

    # RoPE: hd 4, theta 100, position 1: inv_freq [1, 0.1]; cos/sin rounded
    # to bf16: cos 1 -> 138/256, sin 1 -> 215/256, cos .1 -> 255/256,
    # sin .1 -> 204/2048.  q [1, 2, 3, 4]: q*cos [0.5390625, 1.9921875,
    # 1.6171875, 3.984375] (exact); rot*sin [-2.51953 -> -2.515625, -0.3984375,
    # 0.83984375, 0.19921875]; sums [-1.9765625, 1.59375, 2.45703 -> 2.453125,
    # 4.18359 -> 4.1875].
    cos, sin = rope_tables(np.array([[1], [1], [1]]), 4, 100.0, None)
    ok1 = cos[0].tolist() == [0.5390625, 0.99609375] * 2 and \
        sin[0].tolist() == [0.83984375, 0.099609375] * 2
    y = apply_rope(f32([[[1.0, 2.0, 3.0, 4.0]]]), cos, sin)
    tap.check(ok1 and y[0, 0].tolist() == [-1.9765625, 1.59375, 2.453125, 4.1875],
              "self-test: RoPE tables in bf16 and each op rounded (%r)" % y[0, 0].tolist())
    # mrope rows: sections [1, 1, 0], rows t=1, h=10: frequency 1 from row h
    c2, s2 = rope_tables(np.array([[1], [10], [99]]), 4, 100.0, [1, 1, 0])
    tap.check(c2[0].tolist() == [cos[0, 0], float(bf16(f32(math.cos(1.0))))] * 2 and
              s2[0].tolist() == [sin[0, 0], float(bf16(f32(math.sin(1.0))))] * 2,
              "self-test: mrope sections pick the position row per frequency")
    # float32 angles: inv_freq is float32 and the angle a float32 product
    inv = inv_freq_f32(128, 1e6)
    tap.check(inv.dtype == np.float32 and inv[0] == 1.0 and
              abs(inv[1] / 1e6 ** (-2 / 128) - 1) < 1.2e-7,
              "self-test: inv_freq in float32 (%.9g for i=1)" % inv[1])

    # attention: hand case, hd 1, keys k = [0, 1], values v = [1, -0.25],
    # query 1 with scale ln 3: row 1 has s = [0, ln 3], e = [1/3, 1] after
    # the max.  math: p = [0.25, 0.75] -> 0.25 - 0.1875 = 0.0625.  flash:
    # bf16(1/3) = 0.333984375, (0.333984375 - 0.25) * (1 / (4/3)) =
    # 0.06298828125 = 0.0625 * (1 + 2^-7), a bf16 value.  Row 0: v0 = 1.
    qa, ka, va = f32([[1.0], [1.0]]), f32([[0.0], [1.0]]), f32([[1.0], [-0.25]])
    sc = np.float32(math.log(3.0))
    fl = _head_attention(qa, ka, va, sc, "flash")[:, 0].tolist()
    ma = _head_attention(qa, ka, va, sc, "math")[:, 0].tolist()
    tap.check(fl == [1.0, 0.06298828125] and ma == [1.0, 0.0625],
              "self-test: attention hand case: flash rounds exp(s - max) to bf16 "
              "(%r, want [1, 0.06298828125]), math does not (%r, want [1, 0.0625])" % (fl, ma))

    # attention against the float64 reference, several sequences, GQA, and
    # one sequence longer than a kv block (online softmax across blocks).
    seq = [5, 1, 7, 600]
    T, H, KV, hd = sum(seq), 4, 2, 8
    q = bf16(f32(rng.normal(size=(T, H, hd))))
    k = bf16(f32(rng.normal(size=(T, KV, hd))))
    v = bf16(f32(rng.normal(size=(T, KV, hd))))
    ref = rf.attention(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), seq)
    res = {}
    for md in ("flash", "math"):
        got = attention(q, k, v, seq, sdpa_scale(hd), md)
        d = np.abs(got - ref)
        # one bf16 rounding of the output (half an ulp) plus, in flash, the
        # rounding of the weights (relative 2^-9 each: at most 2^-9 max|v|
        # after the normalisation), plus 2^-16 max|v| for the float32
        # roundings of s, exp, the sum and p . v (each ~2^-24 relative,
        # times |s| <~ 10 for s): far below the bf16 terms.
        bound = 0.5 * ulp_bf16(ref) + ((2.0 ** -9 if md == "flash" else 0.0) + 2.0 ** -16) * \
            np.max(np.abs(v))
        res[md] = (float(np.max(d / bound)), bool(np.all(d <= bound)))
    long_a = attention(q[-600:], k[-600:], v[-600:], [600], sdpa_scale(hd), "flash")
    tap.check(res["flash"][1] and res["math"][1],
              "self-test: attention within one output rounding (+ weight rounding in "
              "flash) of the float64 reference, seqs %s, GQA %d/%d (worst %.2f / %.2f "
              "of the bound)"
              % (seq, H, KV, res["flash"][0], res["math"][0]))
    tap.check(np.array_equal(long_a, attention(q, k, v, seq, sdpa_scale(hd), "flash")[-600:]),
              "self-test: packed sequences are independent (the 600-token one alone)")

    # the whole layer: bf16 emulation vs the float64 layer on a random
    # layer; the gap is the bf16 effect, a few 2^-8.
    m = types.SimpleNamespace(hidden=32, n_heads=4, n_kv=2, head_dim=8, inter=48,
                              eps=1e-6, theta=1e4, mrope=[1, 1, 2])
    w = random_layer(rng, m)
    seq = [9, 14]
    T = sum(seq)
    h = bf16(f32(rng.normal(size=(T, m.hidden)) * 4))
    pos = rng.integers(0, 40, size=(3, T))
    cos, sin = rope_tables(pos, m.head_dim, m.theta, m.mrope)
    out = layer_bf16(m, w, h, cos, sin, seq, mode)
    w64 = {k2: (v2.astype(np.float64) if v2 is not None else None) for k2, v2 in w.items()}
    r64 = rf.layer_forward(m, w64, h.astype(np.float64), pos, seq)
    mt = metrics(out, r64)
    tap.check(np.all(is_bf16(out)) and 1e-4 < mt[1] < 2e-2,
              "self-test: random layer: output bf16, f64 vs bf16 %s" % fmt(mt))


def random_layer(rng, m):
    D, qd, kd = m.hidden, m.n_heads * m.head_dim, m.n_kv * m.head_dim

    def r(*shape, s=1.0, c=0.0):
        return bf16(f32(c + s * rng.normal(size=shape)))

    return {"in_norm": r(D, s=0.1, c=1.0), "post_norm": r(D, s=0.1, c=1.0),
            "q": r(qd, D, s=D ** -0.5), "k": r(kd, D, s=D ** -0.5), "v": r(kd, D, s=D ** -0.5),
            "o": r(D, qd, s=qd ** -0.5), "bq": r(qd, s=0.5), "bk": r(kd, s=0.5), "bv": r(kd, s=0.5),
            "gate": r(m.inter, D, s=D ** -0.5), "up": r(m.inter, D, s=D ** -0.5),
            "down": r(D, m.inter, s=m.inter ** -0.5)}


# ---------------------------------------------------------------------------
# self-test, torch part: the same layer written with torch bf16 ops after
# transformers' code


def torch_layer(torch, m, w, h, pos, seq_lens, mode):
    """transformers' Qwen2/Qwen2.5-VL decoder layer in torch.bfloat16 (batch
    1 per sequence); SDPA as FlashAttentionKernel.cpp computes it (or its
    math fallback), written in float32 torch ops from bf16 q, k, v."""
    F = torch.nn.functional
    bf = torch.bfloat16
    W = {k: (torch.from_numpy(f32(v)).to(bf) if v is not None else None) for k, v in w.items()}
    H, KV, hd = m.n_heads, m.n_kv, m.head_dim

    def rmsnorm_t(x, weight):                         # Qwen2RMSNorm.forward
        dt = x.dtype
        x = x.to(torch.float32)
        variance = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + m.eps)
        return weight * x.to(dt)

    def rotate_half_t(x):
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    hs = torch.from_numpy(f32(h)).to(bf)[None]        # [1, T, D]
    T = hs.shape[1]
    # Qwen2_5_VLRotaryEmbedding.forward (rope init: default parameters)
    inv_freq = 1.0 / (m.theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    p3 = torch.from_numpy(np.asarray(pos, np.int64))[:, None, :]          # [3, 1, T]
    inv_e = inv_freq[None, None, :, None].float().expand(3, p3.shape[1], -1, 1)
    freqs = (inv_e.float() @ p3[:, :, None, :].float()).transpose(2, 3)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = (emb.cos() * 1.0).to(hs.dtype), (emb.sin() * 1.0).to(hs.dtype)
    if m.mrope is not None:                           # apply_multimodal_rotary_pos_emb
        sec = list(m.mrope) * 2
        cos = torch.cat([c[i % 3] for i, c in enumerate(cos.split(sec, dim=-1))], dim=-1)
        sin = torch.cat([c[i % 3] for i, c in enumerate(sin.split(sec, dim=-1))], dim=-1)
    else:
        cos, sin = cos[0], sin[0]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)     # [1, 1, T, hd]

    residual = hs
    x = rmsnorm_t(hs, W["in_norm"])
    q = F.linear(x, W["q"], W["bq"]).view(1, T, -1, hd).transpose(1, 2)
    k = F.linear(x, W["k"], W["bk"]).view(1, T, -1, hd).transpose(1, 2)
    v = F.linear(x, W["v"], W["bv"]).view(1, T, -1, hd).transpose(1, 2)
    q = (q * cos) + (rotate_half_t(q) * sin)
    k = (k * cos) + (rotate_half_t(k) * sin)
    g = H // KV
    k = k[:, :, None].expand(1, KV, g, T, hd).reshape(1, H, T, hd)   # repeat_kv
    v = v[:, :, None].expand(1, KV, g, T, hd).reshape(1, H, T, hd)
    scale = torch.tensor(hd ** -0.5, dtype=torch.float32)
    outs, a = [], 0
    for n in seq_lens:
        n = int(n)
        qs, ks, vs = (t[:, :, a:a + n].float() for t in (q, k, v))
        s = (qs @ ks.transpose(2, 3)) * scale
        s = s.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
        if mode == "math":
            o = (torch.softmax(s, dim=-1) @ vs).to(bf)
        else:
            mx = torch.full((1, H, n, 1), float("-inf"))
            tot = torch.zeros(1, H, n, 1)
            dst = torch.zeros(1, H, n, hd)
            for b0 in range(0, n, KV_SPLIT):
                sb = s[..., b0:b0 + KV_SPLIT]
                new = torch.maximum(mx, sb.max(dim=-1, keepdim=True).values)
                e = torch.exp(sb - new)
                et = torch.exp(mx - new)
                tot = e.sum(dim=-1, keepdim=True) + et * tot
                dst = dst * et + e.to(bf).float() @ vs[:, :, b0:b0 + KV_SPLIT]
                mx = new
            o = (dst * (1.0 / tot)).to(bf)
        outs.append(o)
        a += n
    att = torch.cat(outs, dim=2).transpose(1, 2).reshape(1, T, -1).contiguous()
    hs = residual + F.linear(att, W["o"])
    residual = hs
    x = rmsnorm_t(hs, W["post_norm"])
    # ACT2FN["silu"] on bf16: torch >= 2.1's silu_kernel computes in float32
    # and rounds once; written so here because older torch (1.13) rounds
    # exp, 1 + and the division separately on bf16.
    act = F.silu(F.linear(x, W["gate"]).float()).to(bf)
    hs = residual + F.linear(act * F.linear(x, W["up"]), W["down"])
    return hs[0].float().numpy()


def self_test_torch(tap, mode, model_calib):
    try:
        import torch
    except Exception as e:
        tap.diag("SKIP torch comparison: torch does not import (%s)" % e)
        return
    torch.manual_seed(0)
    tap.diag("torch %s: comparing the emulation with torch bf16 ops" % torch.__version__)
    rng = np.random.default_rng(5)

    # nn.functional.linear in bf16 against linear(): the difference is the
    # float32 accumulation order: at most one bf16 ulp of the larger result
    # plus the float32 accumulation error gamma_K * sum|x w|.
    worst_ok, rows = True, []
    for T, K, N, bias in ((240, 64, 64, True), (240, 64, 176, False), (240, 176, 64, False),
                          (256, 1024, 512, True), (64, 4096, 512, False)):
        x = bf16(f32(rng.normal(size=(T, K)) * 3))
        w = bf16(f32(rng.normal(size=(N, K)) / math.sqrt(K)))
        b = bf16(f32(rng.normal(size=N))) if bias else None
        tb = torch.from_numpy(b).bfloat16() if bias else None
        t = torch.nn.functional.linear(torch.from_numpy(x).bfloat16()[None],
                                       torch.from_numpy(w).bfloat16(), tb)[0].float().numpy()
        e = linear(x, w, b)
        d = np.abs(t - e)
        gam = K * 2.0 ** -24 / (1 - K * 2.0 ** -24)
        bound = ulp_bf16(np.maximum(np.abs(t), np.abs(e))) + \
            gam * (np.abs(x) @ np.abs(w).T) * (1 + 2.0 ** -8)
        worst_ok &= bool(np.all(d <= bound))
        one = np.mean((d > 0) & (d <= ulp_bf16(np.maximum(np.abs(t), np.abs(e)))))
        rows.append("[%d,%d]x[%d,%d]%s: differ %.2e (1 ulp %.2e, more %.2e)"
                    % (T, K, K, N, "+b" if bias else "", np.mean(d > 0), one,
                       np.mean(d > ulp_bf16(np.maximum(np.abs(t), np.abs(e))))))
    tap.diag("F.linear bf16 vs emulation: " + "; ".join(rows))
    tap.check(worst_ok, "self-test torch: F.linear in bf16 equals linear() to one bf16 ulp plus "
              "the float32 accumulation bound")

    # The layer.  Agreement bound: rel RMS <= 0.05 x the bf16 effect
    # (f64 vs bf16) of the same case, i.e. the emulation and torch share
    # the rounding, and differ only by rare 1-ulp flips (float32
    # accumulation order, libm ulps of cos/exp/pow) and what those flips
    # propagate; the max per element: 4 bf16 ulps of max|h| (a flip in h,
    # or a flip upstream moving one output by more than one ulp).
    cases = []
    m = types.SimpleNamespace(hidden=64, n_heads=4, n_kv=2, head_dim=16, inter=96,
                              eps=1e-6, theta=1e6, mrope=[2, 3, 3])
    seq = [37, 600]
    T = sum(seq)
    h = bf16(f32(rng.normal(size=(T, m.hidden)) * 8))
    cases.append(("random layer, seqs %s (a 2-block sequence)" % seq, m, random_layer(rng, m),
                  h, rng.integers(0, 700, size=(3, T)), seq))
    if model_calib:
        try:
            dm = rf.Model(model_calib[0])
            check_supported(model_calib[0], dm)
            dc = rf.Calib(model_calib[1])
        except Exception as e:
            tap.check(False, "self-test torch: load %s: %s" % (", ".join(model_calib), e))
            dm = None
        if dm is not None:
            hin = bf16(f32(dc.embeds))
            cos, sin = rope_tables(dc.pos, dm.head_dim, dm.theta, dm.mrope)
            for n in range(dm.n_layers):
                wb = bf16_weights(dm.layer(n))
                cases.append(("%s layer %d" % (os.path.basename(os.path.dirname(
                    os.path.abspath(model_calib[1]))) or "demo", n), dm, wb, hin, dc.pos,
                    dc.seq_lens))
                hin = layer_bf16(dm, wb, hin, cos, sin, dc.seq_lens, mode)
    else:
        tap.diag("no MODEL CALIB given: the demo model part is not run")
    for label, mm, w, hin, pos, seq in cases:
        cos, sin = rope_tables(pos, mm.head_dim, mm.theta, mm.mrope)
        w64 = {k: (v.astype(np.float64) if v is not None else None) for k, v in w.items()}
        r64 = rf.layer_forward(mm, w64, hin.astype(np.float64), pos, seq)
        for md in ((mode, "math" if mode == "flash" else "flash")):
            e = layer_bf16(mm, w, hin, cos, sin, seq, md)
            t = torch_layer(torch, mm, w, hin, pos, seq, md)
            mt, eff = metrics(e, t), metrics(e, r64)
            d = np.abs(t - e)
            maxu = float(np.max(d) / ulp_bf16(np.max(np.abs(e))))
            tap.diag("%s, attention %s: torch vs emulation %s, elements differing %.2e, "
                     "max %.3g ulp of max|h|; bf16 effect rel rms %.2e"
                     % (label, md, fmt(mt), np.mean(d > 0), maxu, eff[1]))
            if md == mode:
                tap.check(np.all(is_bf16(t)) and mt[1] <= 0.05 * eff[1] and maxu <= 4,
                          "self-test torch: %s (%s): rel rms %.2e <= 0.05 x bf16 effect %.2e, "
                          "max %.3g <= 4 ulp of max|h|" % (label, md, mt[1], eff[1], maxu))
        if mode == "flash":
            a, b = layer_bf16(mm, w, hin, cos, sin, seq, "flash"), \
                layer_bf16(mm, w, hin, cos, sin, seq, "math")
            tap.diag("%s: flash vs math attention (the bf16 rounding of the weights): %s"
                     % (label, fmt(metrics(b, a))))


# ---------------------------------------------------------------------------


def usage():
    sys.stderr.write(__doc__)
    return 2


def main(argv):
    tol, ratio, mode, selftest, pos = TOL, RATIO, "flash", False, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--tol" and i + 1 < len(argv):
            tol = float(argv[i + 1])
            i += 2
        elif a == "--ratio" and i + 1 < len(argv):
            ratio = float(argv[i + 1])
            i += 2
        elif a == "--attn" and i + 1 < len(argv) and argv[i + 1] in ("flash", "math"):
            mode = argv[i + 1]
            i += 2
        elif a == "--self-test":
            selftest = True
            i += 1
        elif a.startswith("-"):
            return usage()
        else:
            pos.append(a)
            i += 1
    if selftest and len(pos) not in (0, 2):
        return usage()
    if not selftest and len(pos) != 3:
        return usage()
    tap = Tap()
    try:
        if selftest:
            self_test_numpy(tap, mode)
            self_test_torch(tap, mode, pos if pos else None)
        else:
            run_case(tap, pos[0], pos[1], pos[2], tol, mode, ratio)
    except Exception as e:  # an oracle crash is a failed test, with the plan kept
        import traceback
        tap.check(False, "unexpected %s: %s" % (type(e).__name__, e))
        tap.diag(traceback.format_exc())
    tap.flush()
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
