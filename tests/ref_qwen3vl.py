#!/usr/bin/python3
"""ref_qwen3vl.py: an independent float64 numpy reference of the Qwen3-VL text
decoder (Hugging Face transformers' Qwen3VLTextModel: per-head q_norm/k_norm,
the interleaved multimodal RoPE, DeepStack), a tiny Qwen3-VL checkpoint and
calibration set to run it on, and the TAP test that compares `masq forward`
against it.

usage:
  ref_qwen3vl.py [--tol X] [--chain-tol X] [--self-test] MODEL CALIB H [MODEL CALIB H ...]
  (--tol sets REL_TOL; the token, update and chain tolerances keep their ratio to it)
  ref_qwen3vl.py --self-test
  ref_qwen3vl.py --make-model DIR [--seed N] [--layers L] [--deepstack K] [--v5]
  ref_qwen3vl.py --fake-forward MODEL CALIB H [--variant V]

For every (MODEL, CALIB, H) case, H is the output of
`masq forward --model MODEL --calib CALIB --out H`: layers.N.output [T, hidden]
F32, the hidden state after decoder layer N and its DeepStack addition, the
layers chained from inputs_embeds.  Each layer N is recomputed in float64 from
masq's own output of layer N-1 (inputs_embeds for layer 0), deepstack.N added
at the vision rows, so each TAP line measures that layer's own error; a last
line per case runs the whole chain in float64 from inputs_embeds and compares
the final layer (looser tolerance).  The metrics are ref_forward.py's: rel max
err = max|ref - masq| / max|ref|, the relative RMS error, the worst per-token
relative error, and the error relative to the layer's update (output - input,
deepstack included; net of the output's own float32 rounding).  When a layer
fails, "#" lines name the known fault (no q_norm, the Qwen2-VL chunked M-RoPE,
deepstack skipped or added before the layer, ...) its output is nearest to.

--make-model writes DIR/model (config.json as transformers 4.57 writes it for
Qwen3VLForConditionalGeneration, rope_scaling + rope_theta in text_config, or
as v5 writes it with --v5, rope_parameters; model.safetensors in BF16, a tiny
vision tower included) and DIR/calib.safetensors (masq-calib(5): three
sequences of text, image blocks with get_rope_index's positions, text; K
deepstack.N tensors, default 2, none with --deepstack 0).  It prints nothing.

--fake-forward writes H as a float32 engine would (this reference run in
float32, HF's float32 RoPE tables), optionally with a deliberate fault
(--variant, see VARIANTS); it exists to test this oracle, which --self-test
also does in process.

Upstream semantics, read from huggingface/transformers (src/transformers/
models/qwen3_vl/modeling_qwen3_vl.py and configuration_qwen3_vl.py):
  4.57  commit 3553f0bc23011a5aa459c7b0cd282f570ecd7ac5 (main, 2025-10-07, the
        parent of "v5 dev version" 34dcd73b; the qwen3_vl files as in 4.57.0,
        last changed by 242eb9cb), with modeling_rope_utils.py there;
  v5    commit 347328108aa79959eda0e2eae0695c12f0101046 (main, 2025-12-23,
        5.0.0.dev0; configuration_qwen3_vl.py last changed by 078ff685), with
        modeling_rope_utils.py (RotaryEmbeddingConfigMixin) there.
The text decoder is the same in both:
  Qwen3VLTextRMSNorm: x in float32, x * rsqrt(mean(x^2) + eps), times weight;
    eps = rms_norm_eps (default 1e-6).
  Qwen3VLTextAttention: q = q_norm(q_proj(x).view(..., heads, head_dim)),
    k = k_norm(k_proj(x).view(..., kv_heads, head_dim)) -- RMSNorm over each
    head's head_dim with weight [head_dim], BEFORE RoPE; v = v_proj(x); then
    apply_rotary_pos_emb (q*cos + rotate_half(q)*sin), grouped-query attention
    (repeat_kv: head j reads kv head j // (heads / kv_heads)), causal,
    scaling head_dim**-0.5, o_proj.  q/k/v/o_proj all have a bias iff
    attention_bias (default False).
  Qwen3VLTextRotaryEmbedding: inv_freq = theta^(-2i/head_dim), i < head_dim/2,
    freqs[r] = position_ids[r] * inv_freq for rows r = t, h, w; then
    apply_interleaved_mrope: freqs_t = freqs[0]; for dim, offset in (1, 1),
    (2, 2): idx = slice(offset, mrope_section[dim] * 3, 3); freqs_t[idx] =
    freqs[dim][idx].  So frequency i takes row h if i % 3 == 1 and
    i < 3*section[1], row w if i % 3 == 2 and i < 3*section[2], else row t
    ([6, 5, 5]: T H W T H W T H W T H W T H W T).  emb = cat(freqs, freqs);
    cos, sin; attention_scaling 1 for rope_type "default".  mrope_interleaved
    is not read by the code: Qwen3-VL always interleaves.
  Qwen3VLTextMLP: down(silu(gate(x)) * up(x)).
  Qwen3VLTextDecoderLayer: h += attn(input_layernorm(h));
    h += mlp(post_attention_layernorm(h)).
  Qwen3VLTextModel.forward: after decoder layer i, for i < len(deepstack
    visual embeds) (3 in the released models, one per vision_config.
    deepstack_visual_indexes), _deepstack_process adds feature i to the
    hidden states at visual_pos_masks (image | video tokens), the features'
    rows in the mask's (token) order; the next layer reads the sum.
  Config (text_config of a qwen3_vl config.json; Qwen3VLTextConfig defaults):
    head_dim 128 when absent (not hidden/heads), num_key_value_heads 32,
    rms_norm_eps 1e-6, attention_bias false.  4.57: rope_theta in text_config
    (default 5000000.0), rope_scaling {rope_type, mrope_section,
    mrope_interleaved}.  v5: rope_parameters {rope_type, rope_theta,
    mrope_section, mrope_interleaved}; a legacy rope_scaling wins over it
    (convert_rope_params_to_dict: rope_scaling or rope_parameters) and a
    text_config rope_theta fills a missing rope_parameters.rope_theta; the v5
    default_theta is 500000.0.  mrope_section defaults to [24, 20, 20].
  Weights of Qwen3VLForConditionalGeneration: model.language_model.layers.N.
    {input_layernorm, post_attention_layernorm}.weight [hidden],
    self_attn.{q,k,v,o}_proj.weight, self_attn.{q,k}_norm.weight [head_dim],
    mlp.{gate,up,down}_proj.weight; model.language_model.{embed_tokens,norm},
    lm_head.weight, model.visual.* (the vision tower, its deepstack mergers).

Only numpy and the standard library are used (safetensors reader and writer
included), so it runs in CI without torch.
"""

import json
import math
import mmap
import os
import shutil
import struct
import sys
import tempfile
import types

import numpy as np

# Tolerances of masq's float32 engine against this float64 reference, each
# about 10x the worst value measured over 32 --make-model sets (seeds 1-8 of
# the four shapes 3 layers K=2, 4 layers K=3 v5, 3 layers K=0, 5 layers
# K=1), for masq forward and, alike to two digits, for this reference's own
# float32 twin (--fake-forward): per layer rel max err 4.5e-07 and rms
# 3.5e-07 ...
REL_TOL = 5e-6
# ... the worst token 1.6e-06 (a text token after an image, about half the
# median norm, whose attention reads the much larger vision rows; q_norm/
# k_norm make the attention peaked) ...
TOKEN_TOL = 4 * REL_TOL
# ... the layer's update (deepstack included), net of the output's float32
# rounding, 9.1e-07 ...
UPDATE_TOL = 2 * REL_TOL
# ... and the whole chain from inputs_embeds, rel max 1.7e-06, rms 9.4e-07,
# worst token 4.3e-06 (a looser bound by design: it accumulates every
# layer's float32 error).
CHAIN_TOL = 10 * REL_TOL

LAYER_PREFIXES = ("model.language_model.layers.", "model.layers.",
                  "language_model.model.layers.")

# Qwen3VLTextConfig's defaults (configuration_qwen3_vl.py).
TEXT_DEFAULTS = {"hidden_size": 4096, "intermediate_size": 22016,
                 "num_hidden_layers": 32, "num_attention_heads": 32,
                 "num_key_value_heads": 32, "head_dim": 128, "hidden_act": "silu",
                 "rms_norm_eps": 1e-6, "attention_bias": False}
THETA_DEFAULT_457 = 5000000.0   # 4.57: rope_theta=5000000.0
THETA_DEFAULT_V5 = 500000.0     # v5: Qwen3VLTextConfig.default_theta
MROPE_DEFAULT = [24, 20, 20]    # Qwen3VLTextRotaryEmbedding

# ---------------------------------------------------------------------------
# safetensors, read and write

_DT = {"F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2),
       "BF16": ("<u2", 2), "I64": ("<i8", 8), "I32": ("<i4", 4),
       "I16": ("<i2", 2), "I8": ("i1", 1), "U8": ("u1", 1), "BOOL": ("u1", 1)}


class StFile:
    """One safetensors file over mmap; tensors decoded on demand."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise ValueError("%s: shorter than the 8-byte header length" % path)
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        (n,) = struct.unpack("<Q", self.map[:8])
        if n > size - 8:
            raise ValueError("%s: header length %d past end of file" % (path, n))
        hdr = json.loads(bytes(self.map[8:8 + n]).decode("utf-8"))
        self.meta = hdr.pop("__metadata__", None) or {}
        self.base = 8 + n
        self.entries = {}
        for name, e in hdr.items():
            dt, shape, (b, en) = e["dtype"], e["shape"], e["data_offsets"]
            if dt not in _DT:
                raise ValueError("%s: %s: unsupported dtype %s" % (path, name, dt))
            cnt = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if en - b != cnt * _DT[dt][1] or b < 0 or self.base + en > size:
                raise ValueError("%s: %s: bad data_offsets" % (path, name))
            self.entries[name] = (dt, list(shape), b, en)

    def names(self):
        return list(self.entries)

    def get(self, name):
        """The tensor as a numpy array: floats as float32 (F64 as float64),
        integers in their own type."""
        dt, shape, b, en = self.entries[name]
        a = np.frombuffer(self.map, dtype=_DT[dt][0], offset=self.base + b,
                          count=(en - b) // _DT[dt][1])
        if dt == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        elif dt == "F16":
            a = a.astype(np.float32)
        return a.reshape(shape).copy()


def bf16_bits(x):
    """float32 values -> BF16 bit patterns, round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def bf16_round(x):
    """x rounded to the nearest BF16 value, as float32."""
    return (bf16_bits(x).astype(np.uint32) << 16).view(np.float32)


def st_write(path, tensors, meta=None):
    """Write [(name, dtype, shape, numpy array)] as safetensors: little
    endian, the header padded with spaces to a multiple of 8, the tensors
    ordered by element size (largest first) and then by name, as the
    safetensors library does, so that every tensor starts at an offset that
    is a multiple of its element size with no holes in the data."""
    order = sorted(tensors, key=lambda t: (-_DT[t[1]][1], t[0]))
    hdr = {}
    if meta:
        hdr["__metadata__"] = {str(k): str(v) for k, v in meta.items()}
    blobs, off = [], 0
    for name, dt, shape, arr in order:
        if dt == "BF16":
            data = bf16_bits(arr).astype("<u2").tobytes()
        else:
            data = np.ascontiguousarray(arr).astype(_DT[dt][0]).tobytes()
        cnt = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if len(data) != cnt * _DT[dt][1]:
            raise ValueError("%s: %d bytes for %s %s" % (name, len(data), dt, shape))
        assert off % _DT[dt][1] == 0
        hdr[name] = {"dtype": dt, "shape": [int(s) for s in shape],
                     "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(hdr, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for d in blobs:
            f.write(d)


# ---------------------------------------------------------------------------
# the model


def resolve_text_config(cfg):
    """The decoder's parameters from a Qwen3-VL config.json, as
    Qwen3VLConfig(text_config=...) and Qwen3VLTextRotaryEmbedding see them:
    only text_config's keys (the top level when there is no text_config)."""
    tc = cfg["text_config"] if isinstance(cfg.get("text_config"), dict) else cfg
    r = types.SimpleNamespace()

    def get(k):
        v = tc.get(k)
        return TEXT_DEFAULTS[k] if v is None else v

    r.hidden = int(get("hidden_size"))
    r.n_layers = int(get("num_hidden_layers"))
    r.n_heads = int(get("num_attention_heads"))
    # num_key_value_heads: the default is 32; an explicit null means heads.
    r.n_kv = int(r.n_heads if "num_key_value_heads" in tc and
                 tc["num_key_value_heads"] is None else get("num_key_value_heads"))
    # head_dim: the default is 128; null falls back to hidden // heads (the
    # rotary embedding's `getattr(config, "head_dim", None) or ...`).
    r.head_dim = int(r.hidden // r.n_heads if "head_dim" in tc and
                     tc["head_dim"] is None else get("head_dim"))
    r.inter = int(get("intermediate_size"))
    r.eps = float(get("rms_norm_eps"))
    r.bias = bool(get("attention_bias"))
    act = get("hidden_act")
    if act != "silu":
        raise ValueError("hidden_act %r: only silu is modelled" % act)
    rs, rp = tc.get("rope_scaling"), tc.get("rope_parameters")
    # v5: rope_scaling or rope_parameters; 4.57 reads rope_scaling only.
    d = dict(rs or rp or {})
    r.rope_style = "rope_scaling" if rs else ("rope_parameters" if rp else "none")
    if d.get("rope_theta") is not None:
        r.theta = float(d["rope_theta"])
    elif tc.get("rope_theta") is not None:
        r.theta = float(tc["rope_theta"])
    else:
        r.theta = THETA_DEFAULT_V5 if r.rope_style == "rope_parameters" else THETA_DEFAULT_457
    rtype = d.get("rope_type", d.get("type", "default"))
    if rtype == "mrope":
        rtype = "default"
    if rtype != "default":
        raise ValueError("rope_type %r: only default is modelled" % rtype)
    if float(d.get("partial_rotary_factor", tc.get("partial_rotary_factor", 1.0)) or 1.0) != 1.0:
        raise ValueError("partial_rotary_factor != 1 is not modelled")
    r.mrope = [int(s) for s in d.get("mrope_section", MROPE_DEFAULT)]
    if len(r.mrope) != 3:
        raise ValueError("mrope_section %s: not three sections" % r.mrope)
    r.interleaved_flag = d.get("mrope_interleaved")
    if r.n_heads % r.n_kv:
        raise ValueError("%d heads over %d kv heads" % (r.n_heads, r.n_kv))
    if r.head_dim % 2:
        raise ValueError("odd head_dim %d" % r.head_dim)
    return r


class Model:
    def __init__(self, d):
        with open(os.path.join(d, "config.json")) as f:
            self.cfg = json.load(f)
        mt = self.cfg.get("model_type")
        tmt = (self.cfg.get("text_config") or {}).get("model_type")
        if mt != "qwen3_vl" and tmt != "qwen3_vl_text":
            raise ValueError("%s: model_type %r / text %r is not qwen3_vl" % (d, mt, tmt))
        self.__dict__.update(vars(resolve_text_config(self.cfg)))
        idx = os.path.join(d, "model.safetensors.index.json")
        self.where = {}
        files = {}
        if os.path.exists(idx):
            with open(idx) as f:
                wm = json.load(f)["weight_map"]
            for name, fn in wm.items():
                if fn not in files:
                    files[fn] = StFile(os.path.join(d, fn))
                self.where[name] = files[fn]
        else:
            sf = StFile(os.path.join(d, "model.safetensors"))
            for name in sf.names():
                self.where[name] = sf
        self.prefix = None
        for p in LAYER_PREFIXES:
            if p + "0.input_layernorm.weight" in self.where:
                self.prefix = p
                break
        if self.prefix is None:
            raise ValueError("%s: no layer 0 under any known prefix" % d)

    def tensor(self, layer, suffix, shape):
        name = "%s%d.%s" % (self.prefix, layer, suffix)
        if name not in self.where:
            raise KeyError(name)
        a = self.where[name].get(name).astype(np.float64)
        if list(a.shape) != list(shape):
            raise ValueError("%s: shape %s, want %s" % (name, list(a.shape), list(shape)))
        return a

    def layer(self, n):
        """Layer n's weights in float64, HF layout [out, in]."""
        D, qd, kd, hd = self.hidden, self.n_heads * self.head_dim, \
            self.n_kv * self.head_dim, self.head_dim
        t = self.tensor
        w = {"in_norm": t(n, "input_layernorm.weight", [D]),
             "post_norm": t(n, "post_attention_layernorm.weight", [D]),
             "q": t(n, "self_attn.q_proj.weight", [qd, D]),
             "k": t(n, "self_attn.k_proj.weight", [kd, D]),
             "v": t(n, "self_attn.v_proj.weight", [kd, D]),
             "o": t(n, "self_attn.o_proj.weight", [D, qd]),
             "q_norm": t(n, "self_attn.q_norm.weight", [hd]),
             "k_norm": t(n, "self_attn.k_norm.weight", [hd]),
             "gate": t(n, "mlp.gate_proj.weight", [self.inter, D]),
             "up": t(n, "mlp.up_proj.weight", [self.inter, D]),
             "down": t(n, "mlp.down_proj.weight", [D, self.inter])}
        for p, sz in (("q", qd), ("k", kd), ("v", kd), ("o", D)):
            w["b" + p] = t(n, "self_attn.%s_proj.bias" % p, [sz]) if self.bias else None
        return w


class Calib:
    """A masq-calib(5) set, with Qwen3-VL's optional deepstack.N [n_vision,
    hidden] (row r: the r-th modality-1 token of the whole set)."""

    def __init__(self, path):
        f = StFile(path)
        self.meta = f.meta
        self.embeds = f.get("inputs_embeds").astype(np.float64)
        self.T, self.hidden = self.embeds.shape
        self.modality = f.get("modality") if "modality" in f.entries else \
            np.zeros(self.T, np.uint8)
        self.seq_lens = f.get("seq_lens").astype(np.int64)
        if self.seq_lens.sum() != self.T or self.modality.shape != (self.T,):
            raise ValueError("seq_lens sum %d / modality %s vs %d tokens" %
                             (self.seq_lens.sum(), self.modality.shape, self.T))
        if "position_ids" in f.entries:
            p = f.get("position_ids").astype(np.int64)
            if p.ndim == 1:
                p = np.stack([p, p, p])
            if p.shape != (3, self.T):
                raise ValueError("position_ids shape %s" % (p.shape,))
            self.pos_rows = 3 if len(f.entries["position_ids"][1]) == 2 else 1
        else:
            p = np.concatenate([np.arange(n) for n in self.seq_lens])
            p = np.stack([p, p, p])
            self.pos_rows = 0
        self.pos = p
        self.vision = self.modality == 1
        nv = int(self.vision.sum())
        self.deepstack = []
        names = sorted((n for n in f.names() if n.startswith("deepstack.")),
                       key=lambda n: (len(n), n))
        for k, name in enumerate(names):
            if name != "deepstack.%d" % k:
                raise ValueError("deepstack tensors %s: not deepstack.0..%d" %
                                 (names, len(names) - 1))
            a = f.get(name)
            if a.shape != (nv, self.hidden):
                raise ValueError("%s: shape %s, want [%d, %d]" %
                                 (name, list(a.shape), nv, self.hidden))
            self.deepstack.append(a.astype(np.float64))


# ---------------------------------------------------------------------------
# the layer


def rmsnorm(x, w, eps):
    """Qwen3VLTextRMSNorm over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x * 0.5 * (1.0 + np.tanh(0.5 * x))


def mrope_rows(half, section, layout="interleaved"):
    """Which position row (0 t, 1 h, 2 w) each of the head_dim/2 frequencies
    takes.  interleaved: Qwen3-VL's apply_interleaved_mrope, literally;
    chunked: Qwen2-VL's sections [t..., h..., w...]; none: all row t."""
    rows = np.zeros(half, np.int64)
    if layout == "interleaved":
        for dim, offset in ((1, 1), (2, 2)):
            rows[offset:section[dim] * 3:3] = dim
    elif layout == "chunked":
        s0, s1, _ = section
        rows[s0:s0 + s1] = 1
        rows[s0 + s1:] = 2
    else:
        assert layout == "none"
    return rows


def rope_tables(pos, head_dim, theta, section, layout="interleaved", f32=False):
    """cos, sin [T, head_dim] for positions pos [3, T].  float64, exact
    inverse frequencies; f32=True follows HF's float32 computation (inv_freq,
    the products and cos/sin in float32), as a float32 engine would."""
    half = head_dim // 2
    rows = mrope_rows(half, section, layout)
    if f32:
        inv = (np.float32(1.0) / (np.float32(theta) ** (
            np.arange(0, head_dim, 2).astype(np.float32) / np.float32(head_dim)))).astype(np.float32)
        ang = pos[rows, :].T.astype(np.float32) * inv
        c, s = np.cos(ang), np.sin(ang)
    else:
        inv = theta ** (-(2.0 * np.arange(half)) / head_dim)
        ang = pos[rows, :].T.astype(np.float64) * inv  # [T, half]
        c, s = np.cos(ang), np.sin(ang)
    return np.concatenate([c, c], axis=1), np.concatenate([s, s], axis=1)


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rope(x, cos, sin):
    """x [T, heads, hd]."""
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]


def attention(q, k, v, seq_lens, scale):
    """q [T, H, hd], k, v [T, KV, hd] -> [T, H, hd]: causal within each
    sequence, head h reads kv head h // (H / KV), softmax in q's dtype."""
    T, H, hd = q.shape
    g = H // k.shape[1]
    out = np.zeros_like(q)
    a = 0
    for n in seq_lens:
        n = int(n)
        qs, ks, vs = q[a:a + n], np.repeat(k[a:a + n], g, axis=1), \
            np.repeat(v[a:a + n], g, axis=1)
        sc = np.einsum("thd,shd->hts", qs, ks) * q.dtype.type(scale)
        sc = np.where(np.tril(np.ones((n, n), bool))[None], sc, -np.inf)
        sc = sc - sc.max(axis=-1, keepdims=True)
        p = np.exp(sc)
        p = p / p.sum(axis=-1, keepdims=True)
        out[a:a + n] = np.einsum("hts,shd->thd", p, vs)
        a += n
    return out


# The faults a float32 engine could make, for --fake-forward, the self-test
# and the failure diagnostics.  Each differs from the reference in one way.
VARIANTS = {
    "none": "the reference itself",
    "no-qknorm": "q_norm/k_norm not applied",
    "qknorm-whole": "q_norm/k_norm over all heads at once (weight tiled), not per head",
    "qknorm-after-rope": "q_norm/k_norm applied after RoPE instead of before",
    "chunked-mrope": "Qwen2-VL's chunked M-RoPE sections instead of interleaved",
    "rope-1d": "1-D RoPE from position row t (rows h and w ignored)",
    "theta-1e4": "rope_theta 10000 (rope_theta not found) instead of the config's",
    "scale-hidden": "attention scaled by (hidden/heads)^-0.5 instead of head_dim^-0.5",
    "ds-skip": "deepstack not added",
    "ds-before": "deepstack.N added to layer N's input instead of its output",
    "ds-seq-restart": "deepstack rows counted from 0 in each sequence",
}


def default_opts(**kw):
    o = types.SimpleNamespace(f32=False, qknorm="head", layout="interleaved",
                              theta=None, scale=None, ds="after", ds_rows="global")
    for k, v in kw.items():
        setattr(o, k, v)
    return o


def variant_opts(name, f32=False):
    o = default_opts(f32=f32)
    if name == "no-qknorm":
        o.qknorm = "none"
    elif name == "qknorm-whole":
        o.qknorm = "whole"
    elif name == "qknorm-after-rope":
        o.qknorm = "after-rope"
    elif name == "chunked-mrope":
        o.layout = "chunked"
    elif name == "rope-1d":
        o.layout = "none"
    elif name == "theta-1e4":
        o.theta = 1e4
    elif name == "scale-hidden":
        o.scale = "hidden"
    elif name == "ds-skip":
        o.ds = "skip"
    elif name == "ds-before":
        o.ds = "before"
    elif name == "ds-seq-restart":
        o.ds_rows = "seq"
    else:
        assert name == "none", name
    return o


def project_qkv(m, w, n1, opts, cos, sin):
    """q [T, H, hd], k, v [T, KV, hd] of the normed input n1: projections,
    per-head q_norm/k_norm, then RoPE (the reference order)."""
    T = n1.shape[0]
    H, KV, hd = m.n_heads, m.n_kv, m.head_dim
    q, k, v = n1 @ w["q"].T, n1 @ w["k"].T, n1 @ w["v"].T
    if w["bq"] is not None:
        q, k, v = q + w["bq"], k + w["bk"], v + w["bv"]
    q, k, v = q.reshape(T, H, hd), k.reshape(T, KV, hd), v.reshape(T, KV, hd)

    def norm(x, wn):
        if opts.qknorm == "whole":
            y = rmsnorm(x.reshape(T, -1), np.tile(wn, x.shape[1]), m.eps)
            return y.reshape(x.shape)
        return rmsnorm(x, wn, m.eps)

    if opts.qknorm in ("head", "whole"):
        q, k = norm(q, w["q_norm"]), norm(k, w["k_norm"])
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    if opts.qknorm == "after-rope":
        q, k = norm(q, w["q_norm"]), norm(k, w["k_norm"])
    return q, k, v


def layer_forward(m, w, h, seq_lens, cos_sin, opts):
    """One decoder layer on h [T, hidden] (float64, or float32 with
    opts.f32); returns the new h, deepstack not added."""
    if opts.f32:
        w = {k: (None if v is None else v.astype(np.float32)) for k, v in w.items()}
        h = h.astype(np.float32)
    cos, sin = cos_sin
    T = h.shape[0]
    n1 = rmsnorm(h, w["in_norm"], h.dtype.type(m.eps))
    q, k, v = project_qkv(m, w, n1, opts, cos, sin)
    sd = m.hidden // m.n_heads if opts.scale == "hidden" else m.head_dim
    att = attention(q, k, v, seq_lens, sd ** -0.5).reshape(T, m.n_heads * m.head_dim)
    o = att @ w["o"].T
    if w["bo"] is not None:
        o = o + w["bo"]
    h = h + o
    n2 = rmsnorm(h, w["post_norm"], h.dtype.type(m.eps))
    return h + (silu(n2 @ w["gate"].T) * (n2 @ w["up"].T)) @ w["down"].T


def ds_rows(c, opts):
    """The token index of every deepstack row: the vision tokens in token
    order across the whole set, or (the fault) restarting in each sequence."""
    vis = np.flatnonzero(c.vision)
    if opts.ds_rows == "global":
        return vis, np.arange(len(vis))
    # ds-seq-restart: the r-th vision token of each sequence reads row r.
    starts = np.r_[0, np.cumsum(c.seq_lens)[:-1]]
    seq_of = np.searchsorted(starts, vis, side="right") - 1
    first = {}
    rows = np.zeros(len(vis), np.int64)
    for i, s in enumerate(seq_of):
        first.setdefault(s, i)
        rows[i] = i - first[s]
    return vis, rows


def add_deepstack(h, c, n, opts):
    if n >= len(c.deepstack) or opts.ds == "skip":
        return h
    tok, rows = ds_rows(c, opts)
    h = h.copy()
    h[tok] += c.deepstack[n][rows].astype(h.dtype)
    return h


def step(m, w, h, c, n, cos_sin, opts):
    """Layer n and its deepstack addition (after the layer, or before it for
    the ds-before fault)."""
    if opts.ds == "before":
        return layer_forward(m, w, add_deepstack(h, c, n, default_opts()), c.seq_lens, cos_sin, opts)
    return add_deepstack(layer_forward(m, w, h, c.seq_lens, cos_sin, opts), c, n, opts)


def tables(m, c, opts):
    return rope_tables(c.pos, m.head_dim, opts.theta or m.theta, m.mrope, opts.layout, opts.f32)


def chain(m, c, opts, weights=None):
    """Every layer's output from inputs_embeds: [L] arrays [T, hidden]."""
    cs = tables(m, c, opts)
    h = c.embeds.astype(np.float32) if opts.f32 else c.embeds
    out = []
    for n in range(m.n_layers):
        w = weights[n] if weights is not None else m.layer(n)
        h = step(m, w, h, c, n, cs, opts)
        out.append(h)
    return out


# ---------------------------------------------------------------------------
# the tiny checkpoint and calibration set

# Sequences: ("t", n) n text tokens; ("i", gh, gw) an image of gh x gw merged
# patches (a vision_start token is the text just before it).  Three lengths,
# one with two images, one image taller than wide.
SEQUENCES = [[("t", 6), ("i", 4, 6), ("t", 9)],
             [("t", 4), ("i", 3, 5), ("t", 5), ("i", 2, 2), ("t", 3)],
             [("t", 2), ("i", 5, 3), ("t", 13)]]


def rope_index(segments):
    """position_ids [3, n] and modality [n] of one sequence, as
    Qwen3VLModel.get_rope_index assigns them: text counts on in all rows; an
    image (grid t 1) at next position p gets t = p, h = p + row, w = p + col;
    the text after it starts at the block's largest position + 1."""
    pos, mod, p = [], [], 0
    for seg in segments:
        if seg[0] == "t":
            r = np.arange(seg[1]) + p
            pos.append(np.stack([r, r, r]))
            mod += [0] * seg[1]
            p += seg[1]
        else:
            gh, gw = seg[1], seg[2]
            hh, ww = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
            blk = np.stack([np.zeros(gh * gw, np.int64), hh.ravel(), ww.ravel()]) + p
            pos.append(blk)
            mod += [1] * (gh * gw)
            p = int(blk.max()) + 1
    return np.concatenate(pos, axis=1).astype(np.int64), np.array(mod, np.uint8)


def tiny_config(L, K, v5):
    rope = {"mrope_interleaved": True, "mrope_section": [6, 5, 5], "rope_type": "default"}
    text = {"attention_bias": False, "attention_dropout": 0.0, "dtype": "bfloat16",
            "head_dim": 32, "hidden_act": "silu", "hidden_size": 64,
            "initializer_range": 0.02, "intermediate_size": 176,
            "max_position_embeddings": 262144, "model_type": "qwen3_vl_text",
            "num_attention_heads": 4, "num_hidden_layers": L, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-06}
    if v5:
        rope["rope_theta"] = 5000000.0
        text["rope_parameters"] = dict(sorted(rope.items()))
    else:
        text["rope_scaling"] = rope
        text["rope_theta"] = 5000000
    text.update({"tie_word_embeddings": False, "use_cache": True, "vocab_size": 256})
    vision = {"deepstack_visual_indexes": list(range(K)), "depth": max(3, K),
              "dtype": "bfloat16", "hidden_act": "gelu_pytorch_tanh", "hidden_size": 32,
              "in_channels": 3, "initializer_range": 0.02, "intermediate_size": 64,
              "model_type": "qwen3_vl", "num_heads": 2, "num_position_embeddings": 16,
              "out_hidden_size": 64, "patch_size": 16, "spatial_merge_size": 2,
              "temporal_patch_size": 2}
    return {"architectures": ["Qwen3VLForConditionalGeneration"], "dtype": "bfloat16",
            "image_token_id": 151655, "model_type": "qwen3_vl",
            "text_config": dict(sorted(text.items())), "tie_word_embeddings": False,
            "transformers_version": "5.0.0" if v5 else "4.57.0",
            "video_token_id": 151656, "vision_config": vision,
            "vision_end_token_id": 151653, "vision_start_token_id": 151652}


def make_model(d, seed=20251007, L=3, K=2, v5=False):
    """d/model (config.json, model.safetensors) and d/calib.safetensors."""
    rng = np.random.default_rng(seed)
    cfg = tiny_config(L, K, v5)
    tc, vc = cfg["text_config"], cfg["vision_config"]
    D, H, KV, hd, I, V = (tc[k] for k in ("hidden_size", "num_attention_heads",
                                          "num_key_value_heads", "head_dim",
                                          "intermediate_size", "vocab_size"))
    qd, kd = H * hd, KV * hd
    T_ = []  # (name, dtype, shape, array)

    def lin(name, o, i, gain=1.0, bias=False):
        # trained-looking: ~1/sqrt(in) with per-output-row spread
        a = rng.normal(size=(o, i)) * gain / math.sqrt(i) * rng.lognormal(0, 0.3, size=(o, 1))
        T_.append((name + ".weight", "BF16", [o, i], a))
        if bias:
            T_.append((name + ".bias", "BF16", [o], 0.02 * rng.normal(size=o)))

    def vec(name, n, mean=1.0, spread=0.2):
        T_.append((name, "BF16", [n], mean * rng.lognormal(0, spread, size=n)))

    lm = "model.language_model."
    emb = 0.03 * rng.normal(size=(V, D)) * rng.lognormal(0, 0.3, size=(1, D))
    T_.append((lm + "embed_tokens.weight", "BF16", [V, D], emb))
    for n in range(L):
        p = "%slayers.%d." % (lm, n)
        vec(p + "input_layernorm.weight", D, 1.0, 0.3)
        vec(p + "post_attention_layernorm.weight", D, 1.0, 0.3)
        lin(p + "self_attn.q_proj", qd, D)
        lin(p + "self_attn.k_proj", kd, D)
        lin(p + "self_attn.v_proj", kd, D)
        lin(p + "self_attn.o_proj", D, qd, 0.7)
        # q_norm/k_norm around 1 with a wide spread (trained Qwen3 has
        # channels well above and below 1); k a little larger.
        vec(p + "self_attn.q_norm.weight", hd, 1.0, 0.4)
        vec(p + "self_attn.k_norm.weight", hd, 1.3, 0.4)
        lin(p + "mlp.gate_proj", I, D)
        lin(p + "mlp.up_proj", I, D)
        lin(p + "mlp.down_proj", D, I, 0.7)
    vec(lm + "norm.weight", D, 1.0, 0.3)
    lin("lm_head", V, D)
    # The vision tower, as Qwen3VLVisionModel names it (unused by masq
    # forward, which starts after the towers, but present in a real save).
    vh, vi, ms = vc["hidden_size"], vc["intermediate_size"], vc["spatial_merge_size"]
    vm = vh * ms * ms
    pv = "model.visual."
    T_.append((pv + "patch_embed.proj.weight", "BF16",
               [vh, 3, vc["temporal_patch_size"], vc["patch_size"], vc["patch_size"]],
               0.02 * rng.normal(size=(vh, 3, 2, 16, 16))))
    T_.append((pv + "patch_embed.proj.bias", "BF16", [vh], 0.02 * rng.normal(size=vh)))
    T_.append((pv + "pos_embed.weight", "BF16", [vc["num_position_embeddings"], vh],
               0.02 * rng.normal(size=(vc["num_position_embeddings"], vh))))
    for b in range(vc["depth"]):
        p = "%sblocks.%d." % (pv, b)
        for nm in ("norm1", "norm2"):
            vec(p + nm + ".weight", vh, 1.0, 0.1)
            T_.append((p + nm + ".bias", "BF16", [vh], 0.02 * rng.normal(size=vh)))
        lin(p + "attn.qkv", 3 * vh, vh, bias=True)
        lin(p + "attn.proj", vh, vh, bias=True)
        lin(p + "mlp.linear_fc1", vi, vh, bias=True)
        lin(p + "mlp.linear_fc2", vh, vi, bias=True)
    mergers = [("merger.", vh)] + [("deepstack_merger_list.%d." % j, vm) for j in range(K)]
    for p, nd in mergers:
        vec(pv + p + "norm.weight", nd, 1.0, 0.1)
        T_.append((pv + p + "norm.bias", "BF16", [nd], 0.02 * rng.normal(size=nd)))
        lin(pv + p + "linear_fc1", vm, vm, bias=True)
        lin(pv + p + "linear_fc2", D, vm, bias=True)
    md = os.path.join(d, "model")
    os.makedirs(md, exist_ok=True)
    with open(os.path.join(md, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    st_write(os.path.join(md, "model.safetensors"), T_, {"format": "pt"})

    # The calibration set.  Text rows are embed_tokens rows (what the model
    # would look up); vision rows are merger outputs: larger, a few outlier
    # channels; deepstack features like them, smaller.  All BF16 values.
    embf = bf16_round(emb)
    pos, mod = [], []
    for segs in SEQUENCES:
        p, mo = rope_index(segs)
        pos.append(p)
        mod.append(mo)
    pos, mod = np.concatenate(pos, axis=1), np.concatenate(mod)
    T, nv = len(mod), int((mod == 1).sum())
    ids = rng.integers(0, V, size=T)
    x = embf[ids].astype(np.float64)
    outl = rng.choice(D, size=3, replace=False)
    vis = rng.normal(size=(nv, D)) * 0.8
    vis[:, outl] *= 6.0
    x[mod == 1] = vis
    ts = [("inputs_embeds", "F32", [T, D], bf16_round(x)),
          ("modality", "U8", [T], mod),
          ("seq_lens", "I32", [len(SEQUENCES)],
           np.array([sum(s[1] if s[0] == "t" else s[1] * s[2] for s in q) for q in SEQUENCES])),
          ("position_ids", "I64", [3, T], pos)]
    for j in range(K):
        f = rng.normal(size=(nv, D)) * 0.3 * (1 + 0.5 * j)
        f[:, outl] *= 4.0
        ts.append(("deepstack.%d" % j, "F32", [nv, D], bf16_round(f)))
    st_write(os.path.join(d, "calib.safetensors"), ts,
             {"format": "pt", "calib_format": "masq-calib", "calib_version": "1",
              "source": "ref_qwen3vl.py --make-model seed=%d layers=%d deepstack=%d%s" %
                        (seed, L, K, " v5" if v5 else "")})


def fake_forward(model_dir, calib_path, out_path, variant="none"):
    """H as a float32 engine would write it, optionally with a fault."""
    m, c = Model(model_dir), Calib(calib_path)
    outs = chain(m, c, variant_opts(variant, f32=True))
    st_write(out_path, [("layers.%d.output" % n, "F32", [c.T, m.hidden], o.astype(np.float32))
                        for n, o in enumerate(outs)], {"format": "pt"})


# ---------------------------------------------------------------------------
# the comparison against masq


class Tap:
    def __init__(self, quiet=False):
        self.n = 0
        self.failed = 0
        self.quiet = quiet

    def check(self, cond, msg):
        self.n += 1
        if not cond:
            self.failed += 1
        if not self.quiet:
            print("%s %d - %s" % ("ok" if cond else "not ok", self.n, msg))
            sys.stdout.flush()

    def diag(self, msg):
        if not self.quiet:
            for line in msg.splitlines():
                print("# " + line)


def errors(ref, got, inp, extra=None):
    """(rel max, rel rms, worst per-token rel, rel max of the update).
    extra: rows [T] bool where one more float32 sum (the deepstack addition)
    rounds the output."""
    d = ref - got
    rel_max = np.max(np.abs(d)) / max(1e-30, np.max(np.abs(ref)))
    rel_rms = math.sqrt(np.sum(d * d) / max(1e-300, np.sum(ref * ref)))
    tok = np.max(np.linalg.norm(d, axis=1) / np.maximum(1e-30, np.linalg.norm(ref, axis=1)))
    # The update (output - input, deepstack included) can be orders of
    # magnitude smaller than the residual stream; its error excludes the
    # float32 rounding of the sums h + attn and h + mlp, one unit in the last
    # place of the larger of input and output, and half a unit more where the
    # deepstack feature is added, which no engine can avoid.
    allow = np.spacing(np.maximum(np.abs(inp), np.abs(ref)).astype(np.float32)).astype(np.float64)
    if extra is not None:
        allow[extra] *= 1.5
    upd = ref - inp
    rel_upd = np.max(np.maximum(0.0, np.abs(d) - allow)) / max(1e-30, np.max(np.abs(upd)))
    return rel_max, rel_rms, tok, rel_upd


def nearest_fault(m, w, prev, got, c, n, cs64):
    """The known faults' distance to masq's layer-n output, nearest first."""
    res = []
    for name in VARIANTS:
        if name == "none":
            continue
        o = variant_opts(name)
        cs = cs64 if o.layout == "interleaved" and o.theta is None else tables(m, c, o)
        alt = step(m, w, prev, c, n, cs, o)
        if np.array_equal(alt, step(m, w, prev, c, n, cs64, default_opts())):
            continue  # this fault changes nothing at this layer
        res.append((errors(alt, got, prev)[0], name))
    return sorted(res)


def run_case(tap, label, model_dir, calib_path, h_path, tol, chain_tol):
    upd_ratio, tok_ratio = UPDATE_TOL / REL_TOL, TOKEN_TOL / REL_TOL
    try:
        m = Model(model_dir)
        c = Calib(calib_path)
        hf = StFile(h_path)
    except Exception as e:  # a broken input is a failed test, not a traceback
        tap.check(False, "%s: load model, calibration and masq output: %s" % (label, e))
        return
    want = [("layers.%d.output" % n) for n in range(m.n_layers)]
    bad = [n for n in want if n not in hf.entries or hf.entries[n][0] != "F32" or
           hf.entries[n][1] != [c.T, m.hidden]]
    tap.check(not bad and c.hidden == m.hidden,
              "%s: masq wrote %d layer outputs [%d, %d] F32%s" %
              (label, m.n_layers, c.T, m.hidden, (" (bad: %s)" % ", ".join(bad[:3])) if bad else ""))
    if bad or c.hidden != m.hidden:
        return
    mods = {k: int(np.sum(c.modality == k)) for k in (0, 1, 2)}
    tap.diag("%s: %d tokens (text %d, vision %d, audio %d) in %d sequences %s, "
             "position rows %d, %s theta %g, interleaved mrope %s, heads %d/%d x %d, "
             "bias %s, deepstack %d" %
             (label, c.T, mods[0], mods[1], mods[2], len(c.seq_lens),
              c.seq_lens.tolist()[:8], c.pos_rows, m.rope_style, m.theta, m.mrope,
              m.n_heads, m.n_kv, m.head_dim, "yes" if m.bias else "no", len(c.deepstack)))
    if sum(m.mrope) != m.head_dim // 2:
        tap.diag("%s: mrope_section %s does not sum to head_dim/2 = %d (upstream does not check)"
                 % (label, m.mrope, m.head_dim // 2))
    if m.interleaved_flag is False:
        tap.diag("%s: mrope_interleaved is false; Qwen3-VL interleaves regardless" % label)
    if len(c.deepstack) > m.n_layers:
        tap.diag("%s: %d deepstack features, %d layers: the extra ones are unused"
                 % (label, len(c.deepstack), m.n_layers))
    opts = default_opts()
    cs = tables(m, c, opts)
    ch = c.embeds
    prev = c.embeds
    worst_chain = 0.0
    for n in range(m.n_layers):
        w = m.layer(n)
        got = hf.get("layers.%d.output" % n).astype(np.float64)
        ref = step(m, w, prev, c, n, cs, opts)
        extra = c.vision if n < len(c.deepstack) else None
        rm, rr, tk, ru = errors(ref, got, prev, extra)
        per_mod = []
        for k, nm in ((0, "text"), (1, "vision"), (2, "audio")):
            sel = c.modality == k
            if sel.any():
                per_mod.append("%s %.1e" % (nm, errors(ref[sel], got[sel], prev[sel])[2]))
        tap.diag("%s layer %d: rms %.1e, worst token %.1e (%s), update %.1e, "
                 "max|h| %.3g, max|update| %.3g%s" %
                 (label, n, rr, tk, ", ".join(per_mod), ru, np.max(np.abs(ref)),
                  np.max(np.abs(ref - prev)),
                  ", deepstack.%d added at %d vision rows" % (n, int(c.vision.sum()))
                  if extra is not None else ""))
        ok = bool(np.all(np.isfinite(got))) and max(rm, rr) <= tol and \
            tk <= tol * tok_ratio and ru <= tol * upd_ratio
        tap.check(ok, "%s layer %d: rel max err %.1e <= %.0e (rms %.1e, token %.1e <= %.0e, "
                  "update %.1e <= %.0e)" % (label, n, rm, tol, rr, tk, tol * tok_ratio,
                                            ru, tol * upd_ratio))
        if not ok and np.all(np.isfinite(got)):
            near = nearest_fault(m, w, prev, got, c, n, cs)
            tap.diag("%s layer %d: masq's output against known faults (rel max err): %s" %
                     (label, n, ", ".join("%s %.1e" % (name, e) for e, name in near[:4])))
        ch = step(m, w, ch, c, n, cs, opts)
        worst_chain = max(worst_chain, errors(ch, got, prev)[0])
        prev = got
    rm, rr, tk, ru = errors(ch, prev, c.embeds)
    tap.check(bool(np.all(np.isfinite(prev))) and max(rm, rr, tk) <= chain_tol,
              "%s chained %d layers: rel max err %.1e <= %.0e (rms %.1e, token %.1e; "
              "worst layer %.1e)" % (label, m.n_layers, rm, chain_tol, rr, tk, worst_chain))


# ---------------------------------------------------------------------------
# self-test: the reference against plain loops, hand-computed cases and its
# own invariants; and the comparison against a float32 twin and faults


def naive_layer(m, w, h, pos, seq_lens):
    """The layer with plain Python loops and math: per-token, per-head,
    the interleaved rule written as i % 3 (not as slices)."""
    T, H, KV, hd = len(h), m.n_heads, m.n_kv, m.head_dim
    half = hd // 2

    def rms(x, wt):
        s = math.sqrt(sum(v * v for v in x) / len(x) + m.eps)
        return [x[i] / s * wt[i] for i in range(len(x))]

    def mv(W, x, b=None):
        return [sum(W[o][i] * x[i] for i in range(len(x))) + (b[o] if b is not None else 0.0)
                for o in range(len(W))]

    def row(i):
        s = m.mrope
        if i % 3 == 1 and i < 3 * s[1]:
            return 1
        if i % 3 == 2 and i < 3 * s[2]:
            return 2
        return 0

    def rope(x, t):
        out = [0.0] * hd
        for i in range(half):
            a = pos[row(i)][t] * m.theta ** (-2.0 * i / hd)
            out[i] = x[i] * math.cos(a) - x[i + half] * math.sin(a)
            out[i + half] = x[i + half] * math.cos(a) + x[i] * math.sin(a)
        return out

    W = {k: (v.tolist() if v is not None else None) for k, v in w.items()}
    qs, ks, vs = [], [], []
    for t in range(T):
        n1 = rms(list(h[t]), W["in_norm"])
        q, k, v = mv(W["q"], n1, W["bq"]), mv(W["k"], n1, W["bk"]), mv(W["v"], n1, W["bv"])
        qs.append([rope(rms(q[j * hd:(j + 1) * hd], W["q_norm"]), t) for j in range(H)])
        ks.append([rope(rms(k[j * hd:(j + 1) * hd], W["k_norm"]), t) for j in range(KV)])
        vs.append([v[j * hd:(j + 1) * hd] for j in range(KV)])
    out = []
    a = 0
    for n in seq_lens:
        for t in range(a, a + n):
            att = []
            for j in range(H):
                kv = j // (H // KV)
                sc = [sum(qs[t][j][i] * ks[s][kv][i] for i in range(hd)) / math.sqrt(hd)
                      for s in range(a, t + 1)]
                mx = max(sc)
                e = [math.exp(z - mx) for z in sc]
                z = sum(e)
                att += [sum(e[i] / z * vs[s][kv][d] for i, s in enumerate(range(a, t + 1)))
                        for d in range(hd)]
            x = [h[t][d] + v for d, v in enumerate(mv(W["o"], att, W["bo"]))]
            n2 = rms(x, W["post_norm"])
            g, u = mv(W["gate"], n2), mv(W["up"], n2)
            act = [g[i] / (1.0 + math.exp(-g[i])) * u[i] for i in range(len(g))]
            out.append([x[d] + v for d, v in enumerate(mv(W["down"], act))])
        a += n
    return np.array(out)


def small_model(rng, bias):
    m = types.SimpleNamespace()
    m.hidden, m.n_heads, m.n_kv, m.head_dim, m.inter = 12, 4, 2, 8, 20
    m.eps, m.theta, m.mrope, m.bias = 1e-6, 1e4, [2, 1, 1], bias
    D, qd, kd = m.hidden, m.n_heads * m.head_dim, m.n_kv * m.head_dim
    w = {"in_norm": 1 + 0.1 * rng.normal(size=D), "post_norm": 1 + 0.1 * rng.normal(size=D),
         "q": rng.normal(size=(qd, D)) / 3, "k": rng.normal(size=(kd, D)) / 3,
         "v": rng.normal(size=(kd, D)) / 3, "o": rng.normal(size=(D, qd)) / 3,
         "q_norm": rng.lognormal(0, 0.4, size=m.head_dim),
         "k_norm": rng.lognormal(0, 0.4, size=m.head_dim),
         "gate": rng.normal(size=(m.inter, D)) / 3, "up": rng.normal(size=(m.inter, D)) / 3,
         "down": rng.normal(size=(D, m.inter)) / 3}
    for p, sz in (("q", qd), ("k", kd), ("v", kd), ("o", D)):
        w["b" + p] = rng.normal(size=sz) if bias else None
    return m, w


def calib_from(seqs):
    """A Calib from [(embeds [n, D], modality [n], pos [3, n], ds rows [K] of
    [n_vision_in_seq, D])] in order."""
    c = types.SimpleNamespace()
    c.embeds = np.concatenate([s[0] for s in seqs])
    c.modality = np.concatenate([s[1] for s in seqs])
    c.pos = np.concatenate([s[2] for s in seqs], axis=1)
    c.seq_lens = np.array([len(s[1]) for s in seqs])
    c.T, c.hidden = c.embeds.shape
    c.vision = c.modality == 1
    K = len(seqs[0][3])
    c.deepstack = [np.concatenate([s[3][j] for s in seqs]) for j in range(K)]
    return c


def self_test(tap):
    rng = np.random.default_rng(11)

    # The interleaved row pattern, written out by hand.
    T_, H_, W_ = 0, 1, 2
    ok = (mrope_rows(16, [6, 5, 5]).tolist() == [T_, H_, W_] * 5 + [T_] and
          mrope_rows(64, [24, 20, 20]).tolist() == [T_, H_, W_] * 20 + [T_] * 4 and
          mrope_rows(16, [6, 5, 5], "chunked").tolist() == [T_] * 6 + [H_] * 5 + [W_] * 5)
    tap.check(ok, "self-test: interleaved mrope rows THW..T for [6,5,5] and [24,20,20]; "
              "chunked TTT..HHH..WWW")

    # RoPE by hand: hd 6, theta 64 -> inv_freq [1, 1/4, 1/16]; sections
    # [1, 1, 1] interleaved: frequency 0 from t (pos 2), 1 from h (pos 5),
    # 2 from w (pos 9).
    x = np.array([[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]])
    cos, sin = rope_tables(np.array([[2], [5], [9]]), 6, 64.0, [1, 1, 1])
    a = [2 * 1.0, 5 * 0.25, 9 / 16.0]
    want = [x[0, 0, i] * math.cos(a[i]) - x[0, 0, i + 3] * math.sin(a[i]) for i in range(3)] + \
           [x[0, 0, i + 3] * math.cos(a[i]) + x[0, 0, i] * math.sin(a[i]) for i in range(3)]
    got = apply_rope(x, cos, sin)[0, 0]
    tap.check(np.max(np.abs(got - want)) < 1e-15,
              "self-test: interleaved M-RoPE on a hand-computed case (rotate_half pairs)")

    # (a) with three equal rows the interleaved M-RoPE is plain 1-D RoPE.
    pos = rng.integers(0, 300, size=(1, 40))
    p3 = np.concatenate([pos] * 3)
    a, b = rope_tables(p3, 32, 5e6, [6, 5, 5]), rope_tables(p3, 32, 5e6, [6, 5, 5], "none")
    tap.check(np.max(np.abs(a[0] - b[0])) + np.max(np.abs(a[1] - b[1])) == 0,
              "self-test: (a) interleaved M-RoPE with t = h = w is plain 1-D RoPE")

    # (b) q_norm/k_norm: weight 1, eps ~0: every head of q and k, before and
    # after RoPE, has RMS 1 and equals x / sqrt(mean(x^2)) of that head alone.
    m, w = small_model(rng, True)
    w["q_norm"], w["k_norm"] = np.ones(m.head_dim), np.ones(m.head_dim)
    m.eps = 1e-300
    h = rng.normal(size=(7, m.hidden)) * 3
    n1 = rmsnorm(h, w["in_norm"], m.eps)
    one = (np.ones((7, m.head_dim)), np.zeros((7, m.head_dim)))
    q, k, _ = project_qkv(m, w, n1, default_opts(), *one)
    qr = (n1 @ w["q"].T + w["bq"]).reshape(7, m.n_heads, m.head_dim)
    e = 0.0
    for t in range(7):
        for j in range(m.n_heads):
            v = qr[t, j]
            s = math.sqrt(sum(float(z) ** 2 for z in v) / len(v))
            e = max(e, max(abs(float(q[t, j, i]) - float(v[i]) / s) for i in range(len(v))))
    cs = rope_tables(rng.integers(0, 50, size=(3, 7)), m.head_dim, m.theta, m.mrope)
    q2, k2, _ = project_qkv(m, w, n1, default_opts(), *cs)
    rms_heads = np.concatenate([np.sqrt(np.mean(q2 ** 2, axis=-1)).ravel(),
                                np.sqrt(np.mean(k2 ** 2, axis=-1)).ravel()])
    whole, _, _ = project_qkv(m, w, n1, default_opts(qknorm="whole"), *one)
    tap.check(e < 1e-14 and np.max(np.abs(rms_heads - 1)) < 1e-14 and
              np.max(np.abs(whole - q)) > 1e-2,
              "self-test: (b) q_norm/k_norm of weight 1 is a per-head RMS normalisation "
              "(err %.1e; head RMS after RoPE 1 +- %.1e; not the whole-vector one)"
              % (e, np.max(np.abs(rms_heads - 1))))

    # Attention: numpy against token-by-token loops, 3 sequences, GQA 4/2.
    seq = [5, 1, 7]
    T, H, KV, hd = sum(seq), 4, 2, 6
    q, k, v = rng.normal(size=(T, H, hd)), rng.normal(size=(T, KV, hd)), \
        rng.normal(size=(T, KV, hd))
    got = attention(q, k, v, seq, hd ** -0.5)
    want = np.zeros_like(q)
    a = 0
    for n in seq:
        for t in range(a, a + n):
            for j in range(H):
                kv = j // 2
                sc = [float(q[t, j] @ k[s, kv]) / math.sqrt(hd) for s in range(a, t + 1)]
                ex = [math.exp(z - max(sc)) for z in sc]
                for i, s in enumerate(range(a, t + 1)):
                    want[t, j] += ex[i] / sum(ex) * v[s, kv]
        a += n
    tap.check(np.max(np.abs(got - want)) < 1e-13,
              "self-test: attention equals a per-token loop (causal, per sequence, GQA)")

    # The whole layer against plain loops: q_norm/k_norm, interleaved M-RoPE
    # with distinct t/h/w rows, with and without the four biases.
    errs = []
    for bias in (True, False):
        m, w = small_model(rng, bias)
        seq = [4, 6, 3]
        h = rng.normal(size=(sum(seq), m.hidden)) * 2
        pos = rng.integers(0, 30, size=(3, sum(seq)))
        cs = rope_tables(pos, m.head_dim, m.theta, m.mrope)
        got = layer_forward(m, w, h, seq, cs, default_opts())
        want = naive_layer(m, w, h, pos.tolist(), seq)
        errs.append(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    tap.check(max(errs) < 1e-13,
              "self-test: layer equals a plain-loop layer (bias %.1e, no bias %.1e)" % tuple(errs))

    # A made model and its calibration set: config in both styles, the
    # positions, the deepstack rows.
    tmp = tempfile.mkdtemp(prefix="ref_qwen3vl_selftest.", dir=".")
    try:
        self_test_files(tap, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # BF16 / F16 decoding and the writer, round trip, alignment.
    path = "ref_qwen3vl_selftest.%d.safetensors" % os.getpid()  # in the cwd
    st_write(path, [("b", "BF16", [2, 2], np.array([1.0, -2.0, 0.0, np.inf], np.float32)),
                    ("u", "U8", [3], np.array([1, 0, 2])),
                    ("h", "F16", [2], np.array([1.5, -0.25])),
                    ("i", "I64", [1, 2], np.array([[-3, 1 << 40]]))],
             {"format": "pt"})
    f = StFile(path)
    ok = (f.get("b").tolist() == [[1.0, -2.0], [0.0, math.inf]] and
          f.get("h").tolist() == [1.5, -0.25] and f.get("i").tolist() == [[-3, 1 << 40]] and
          f.get("u").tolist() == [1, 0, 2] and f.meta == {"format": "pt"} and
          f.base % 8 == 0 and
          all((f.base + e[2]) % _DT[e[0]][1] == 0 for e in f.entries.values()) and
          sorted((e[2], e[3]) for e in f.entries.values())[0][0] == 0 and
          bf16_round(np.array([1.00390625, 1.01171875], np.float32)).tolist() == [1.0, 1.015625])
    offs = sorted((e[2], e[3]) for e in f.entries.values())
    ok = ok and all(offs[i][1] == offs[i + 1][0] for i in range(len(offs) - 1))
    del f
    os.unlink(path)
    tap.check(ok, "self-test: safetensors writer (aligned, no holes) and BF16/F16/I64/U8 "
              "round trip, BF16 round-to-nearest-even")


def self_test_files(tap, tmp):
    d1, d2, d0 = os.path.join(tmp, "a"), os.path.join(tmp, "b"), os.path.join(tmp, "z")
    make_model(d1, seed=5, L=3, K=2)
    make_model(d2, seed=5, L=3, K=2, v5=True)
    make_model(d0, seed=5, L=3, K=0)
    m1, m2 = Model(os.path.join(d1, "model")), Model(os.path.join(d2, "model"))
    keys = ("hidden", "n_layers", "n_heads", "n_kv", "head_dim", "inter", "eps", "theta",
            "mrope", "bias")
    same = all(getattr(m1, k) == getattr(m2, k) for k in keys)
    w1, w2 = m1.layer(1), m2.layer(1)
    same = same and all((w1[k] is None and w2[k] is None) or np.array_equal(w1[k], w2[k])
                        for k in w1)
    tap.check(same and m1.rope_style == "rope_scaling" and m2.rope_style == "rope_parameters"
              and m1.theta == 5e6 and m1.mrope == [6, 5, 5] and m1.head_dim == 32 and
              m1.hidden // m1.n_heads == 16,
              "self-test: --make-model's 4.57 (rope_scaling) and v5 (rope_parameters) "
              "configs resolve alike: theta 5e6, mrope [6,5,5], head_dim 32 != hidden/heads")
    # Defaults of an almost empty text_config, as upstream resolves them.
    r = resolve_text_config({"text_config": {"num_attention_heads": 64}})
    r5 = resolve_text_config({"text_config": {"rope_parameters": {"rope_type": "default"}}})
    r6 = resolve_text_config({"text_config": {"rope_theta": 7.0, "rope_scaling": {"rope_theta": 9.0},
                                              "rope_parameters": {"rope_theta": 8.0}}})
    tap.check(r.head_dim == 128 and r.n_kv == 32 and r.hidden == 4096 and r.eps == 1e-6 and r.theta == 5e6 and
              r.mrope == [24, 20, 20] and not r.bias and r5.theta == 5e5 and r6.theta == 9.0,
              "self-test: config defaults (head_dim 128, kv heads 32, eps 1e-6, mrope "
              "[24,20,20], theta 5e6 in 4.57 / 5e5 in v5, rope_scaling over rope_parameters)")

    c1 = Calib(os.path.join(d1, "calib.safetensors"))
    p, mo = rope_index([("t", 2), ("i", 2, 3), ("t", 1), ("i", 3, 1), ("t", 2)])
    want = [[0, 1, 2, 2, 2, 2, 2, 2, 5, 6, 6, 6, 9, 10],
            [0, 1, 2, 2, 2, 3, 3, 3, 5, 6, 7, 8, 9, 10],
            [0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 6, 6, 9, 10]]
    tap.check(p.tolist() == want and mo.tolist() == [0, 0] + [1] * 6 + [0] + [1] * 3 + [0, 0] and
              len(c1.deepstack) == 2 and c1.deepstack[0].shape == (int(c1.vision.sum()), 64) and
              c1.seq_lens.tolist() == [39, 31, 30] and
              len(Calib(os.path.join(d0, "calib.safetensors")).deepstack) == 0,
              "self-test: get_rope_index positions by hand (two images, wide and tall); "
              "the made set has 3 sequences [39, 31, 30], deepstack [n_vision, hidden]")

    # (c) deepstack: with K features the chain equals the K-1 chain up to
    # layer K-2, and at layer K-1 differs exactly by feature K-1 at the
    # vision rows and nowhere else; from then on rows before the first
    # vision token of their sequence stay the same (causal).
    m = m1
    W = [m.layer(n) for n in range(m.n_layers)]
    full = chain(m, c1, default_opts(), W)
    ok, msg = True, []
    starts = np.r_[0, np.cumsum(c1.seq_lens)[:-1]]
    before = np.zeros(c1.T, bool)
    for s, n in zip(starts, c1.seq_lens):
        fv = s + int(np.argmax(c1.vision[s:s + n]))
        before[s:fv] = True
    for K in range(len(c1.deepstack), 0, -1):
        cK = types.SimpleNamespace(**vars(c1))
        cK.deepstack = c1.deepstack[:K - 1]
        part = chain(m, cK, default_opts(), W)
        withK = chain(m, types.SimpleNamespace(**dict(vars(c1), deepstack=c1.deepstack[:K])),
                      default_opts(), W)
        for n in range(m.n_layers):
            d = withK[n] - part[n]
            if n < K - 1:
                ok = ok and np.array_equal(withK[n], part[n])
            elif n == K - 1:
                ok = ok and np.all(d[~c1.vision] == 0) and \
                    np.max(np.abs(d[c1.vision] - c1.deepstack[K - 1])) < 1e-12
            else:
                ok = ok and np.all(d[before] == 0) and np.all(np.abs(d[c1.vision]).max(axis=1) > 0)
        msg.append("K=%d" % K)
    tap.check(ok, "self-test: (c) deepstack K vs K-1 (%s): same before layer K-1, there "
              "+feature K-1 at vision rows only, later unchanged before each first vision token"
              % ", ".join(msg))

    # (d) permutation: sequences (with their deepstack rows) in another order
    # give the same outputs, permuted; and a change to a sequence's last
    # token changes nothing else (causal, within sequences).
    seqs = []
    vis_idx = np.cumsum(c1.vision) - 1
    for s, n in zip(starts, c1.seq_lens):
        sl = slice(s, s + n)
        vr = vis_idx[sl][c1.vision[sl]]
        seqs.append((c1.embeds[sl], c1.modality[sl], c1.pos[:, sl],
                     [f[vr] for f in c1.deepstack]))
    perm = [2, 0, 1]
    cp = calib_from([seqs[i] for i in perm])
    outp = chain(m, cp, default_opts(), W)
    idx = np.concatenate([np.arange(starts[i], starts[i] + c1.seq_lens[i]) for i in perm])
    ep = max(np.max(np.abs(outp[n] - full[n][idx])) / np.max(np.abs(full[n]))
             for n in range(m.n_layers))
    s1 = list(seqs[0])
    s1[0] = s1[0].copy()
    s1[0][-1] += 1.0
    cc = calib_from([tuple(s1)] + seqs[1:])
    outc = chain(m, cc, default_opts(), W)
    last = starts[0] + c1.seq_lens[0] - 1
    keep = np.ones(c1.T, bool)
    keep[last] = False
    ec = max(np.max(np.abs(outc[n][keep] - full[n][keep])) for n in range(m.n_layers))
    chg = min(np.max(np.abs(outc[n][last] - full[n][last])) for n in range(m.n_layers))
    tap.check(ep < 1e-13 and ec < 1e-13 and chg > 1e-3,
              "self-test: (d) permuting sequences (and deepstack rows) permutes the outputs "
              "(%.1e); a last token touches only itself (%.1e)" % (ep, ec))

    # (e) the chunked (Qwen2-VL) M-RoPE differs from the interleaved one on
    # the same input, by far more than the tolerance.
    ech = errors(chain(m, c1, default_opts(layout="chunked"), W)[0], full[0], c1.embeds)[0]
    tap.check(ech > 100 * REL_TOL,
              "self-test: (e) chunked M-RoPE gives another layer 0 (rel max diff %.1e)" % ech)

    # (f) the comparison itself: the float32 twin passes on all three made
    # sets, and every fault fails on the K=2 set.
    worst = [0.0, 0.0, 0.0, 0.0, 0.0]
    ok = True
    for d in (d1, d2, d0):
        hp = os.path.join(d, "h.safetensors")
        fake_forward(os.path.join(d, "model"), os.path.join(d, "calib.safetensors"), hp)
        q = Tap(quiet=True)
        run_case(q, "f32", os.path.join(d, "model"), os.path.join(d, "calib.safetensors"),
                 hp, REL_TOL, CHAIN_TOL)
        ok = ok and q.failed == 0 and q.n == 2 + m.n_layers
        mm, cc2 = Model(os.path.join(d, "model")), Calib(os.path.join(d, "calib.safetensors"))
        hf = StFile(hp)
        prev = cc2.embeds
        cs = tables(mm, cc2, default_opts())
        ch = cc2.embeds
        for n in range(mm.n_layers):
            got = hf.get("layers.%d.output" % n).astype(np.float64)
            ref = step(mm, mm.layer(n), prev, cc2, n, cs, default_opts())
            e4 = errors(ref, got, prev, cc2.vision if n < len(cc2.deepstack) else None)
            worst[:4] = [max(x, y) for x, y in zip(worst[:4], e4)]
            ch = step(mm, mm.layer(n), ch, cc2, n, cs, default_opts())
            prev = got
        worst[4] = max(worst[4], errors(ch, prev, cc2.embeds)[0])
    tap.check(ok, "self-test: (f) a float32 engine passes (worst: rel max %.1e, rms %.1e, "
              "token %.1e, update %.1e, chain %.1e)" % tuple(worst))
    for name in VARIANTS:
        if name == "none":
            continue
        hp = os.path.join(d1, "h.%s.safetensors" % name)
        fake_forward(os.path.join(d1, "model"), os.path.join(d1, "calib.safetensors"), hp, name)
        q = Tap(quiet=True)
        run_case(q, name, os.path.join(d1, "model"), os.path.join(d1, "calib.safetensors"),
                 hp, REL_TOL, CHAIN_TOL)
        tap.check(q.failed > 0, "self-test: (f) a float32 engine with %s fails (%d of %d lines)"
                  % (VARIANTS[name], q.failed, q.n))


# ---------------------------------------------------------------------------


def main(argv):
    if argv[:1] == ["--make-model"]:
        args, kw = argv[1:], {}
        d = None
        i = 0
        try:
            while i < len(args):
                a = args[i]
                if a == "--seed":
                    kw["seed"] = int(args[i + 1])
                    i += 2
                elif a == "--layers":
                    kw["L"] = int(args[i + 1])
                    i += 2
                elif a == "--deepstack":
                    kw["K"] = int(args[i + 1])
                    i += 2
                elif a == "--v5":
                    kw["v5"] = True
                    i += 1
                elif a.startswith("-") or d is not None:
                    raise ValueError(a)
                else:
                    d = a
                    i += 1
        except (IndexError, ValueError):
            d = None
        if d is None or kw.get("L", 3) < 1 or kw.get("K", 2) < 0:
            sys.stderr.write(__doc__)
            return 2
        make_model(d, **kw)
        return 0
    if argv[:1] == ["--fake-forward"]:
        rest = argv[1:]
        variant = "none"
        if len(rest) == 5 and rest[3] == "--variant":
            variant = rest[4]
            rest = rest[:3]
        if len(rest) != 3 or variant not in VARIANTS:
            sys.stderr.write(__doc__ + "\nvariants:\n" +
                             "".join("  %-18s %s\n" % kv for kv in VARIANTS.items()))
            return 2
        fake_forward(rest[0], rest[1], rest[2], variant)
        return 0
    tol, chain_tol, selftest, cases = REL_TOL, None, False, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--tol", "--chain-tol") and i + 1 < len(argv):
            try:
                v = float(argv[i + 1])
            except ValueError:
                sys.stderr.write(__doc__)
                return 2
            if a == "--tol":
                tol = v
            else:
                chain_tol = v
            i += 2
        elif a == "--self-test":
            selftest = True
            i += 1
        elif a.startswith("-"):
            sys.stderr.write(__doc__)
            return 2
        else:
            cases.append(a)
            i += 1
    if len(cases) % 3 or (not cases and not selftest):
        sys.stderr.write(__doc__)
        return 2
    if chain_tol is None:
        chain_tol = tol * CHAIN_TOL / REL_TOL
    tap = Tap()
    if selftest:
        self_test(tap)
    for j in range(0, len(cases), 3):
        md, cp, hp = cases[j:j + 3]
        label = os.path.basename(os.path.dirname(os.path.abspath(cp))) or "case"
        run_case(tap, label, md, cp, hp, tol, chain_tol)
    print("1..%d" % tap.n)
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
