#!/usr/bin/python3
"""ref_forward.py: an independent float64 numpy reference of the decoder layer
forward (Qwen2 / Qwen2.5-VL text backbone, Hugging Face transformers
semantics), and the TAP test that compares `masq forward` against it.

usage:
  ref_forward.py [--tol X] [--chain-tol X] [--self-test] MODEL CALIB H [MODEL CALIB H ...]
  (--tol sets REL_TOL; the update and chain tolerances keep their ratio to it)
  ref_forward.py --self-test
  ref_forward.py --make-variant SRC_MODEL SRC_CALIB DST_DIR {1row|none}

For every (MODEL, CALIB, H) case, H is the output of
`masq forward --model MODEL --calib CALIB --out H`: layers.N.output [T, hidden]
F32, the hidden state after layer N with the layers chained from
inputs_embeds.  Each layer N is recomputed in float64 from masq's own output of
layer N-1 (inputs_embeds for layer 0), so each TAP line measures that layer's
own error; a last line per case runs the whole chain in float64 from
inputs_embeds and compares the final layer (looser tolerance).

Metric: rel max err = max|ref - masq| / max|ref|.  Printed beside it (and
also bounded): the relative RMS error, the worst per-token relative error
(|ref_t - masq_t| / |ref_t|, catches a fault confined to a few tokens of a
small-valued modality), and the error relative to the layer's update
(output - input; net of the output's own float32 rounding), which the
residual stream would otherwise hide: in the demo max|h| is ~200x max|update|.

--make-variant writes DST_DIR/model (config.json without rope_scaling, the
weights symlinked) and DST_DIR/calib.safetensors (position_ids as one row, or
none at all) from a model and calibration set; it prints nothing on stdout.

Only numpy and the standard library are used (safetensors reader and writer
included), so it runs in CI without torch.
"""

import json
import math
import mmap
import os
import struct
import sys
import types

import numpy as np

# Tolerances of masq's float32 engine against this float64 reference, each
# about 10x the worst value measured on the tiny demo and its variants (see
# the "#" diagnostics of a run): per layer, rel max err 6e-08, rel rms 4e-08
# and worst token 2.6e-07 (a near-zero token of the rope1d variant) ...
REL_TOL = 2e-6
# ... the layer's update, net of the output's float32 rounding, 6.0e-07 ...
UPDATE_TOL = 3 * REL_TOL
# ... and the whole chain from inputs_embeds, which accumulates every
# layer's float32 error, 3.3e-07 (a looser bound by design).
CHAIN_TOL = 10 * REL_TOL

LAYER_PREFIXES = ("model.layers.", "model.language_model.layers.",
                  "language_model.model.layers.", "thinker.model.layers.")

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
            if en - b != cnt * _DT[dt][1] or self.base + en > size:
                raise ValueError("%s: %s: bad data_offsets" % (path, name))
            self.entries[name] = (dt, list(shape), b, en)

    def names(self):
        return list(self.entries)

    def raw(self, name):
        """(dtype, shape, bytes) of a tensor, undecoded."""
        dt, shape, b, en = self.entries[name]
        return dt, shape, self.map[self.base + b:self.base + en]

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


def st_write(path, tensors, meta=None):
    """Write [(name, dtype, shape, bytes)] contiguously, header padded to 8."""
    hdr = {}
    if meta:
        hdr["__metadata__"] = dict(meta)
    off = 0
    for name, dt, shape, data in tensors:
        cnt = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if len(data) != cnt * _DT[dt][1]:
            raise ValueError("%s: %d bytes for %s %s" % (name, len(data), dt, shape))
        hdr[name] = {"dtype": dt, "shape": list(shape),
                     "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(hdr, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for t in tensors:
            f.write(t[3])


# ---------------------------------------------------------------------------
# the model


def text_config(cfg):
    """The text config inside a config.json (top, text_config or
    thinker_config.text_config), with missing keys taken from the top."""
    tc = cfg
    if isinstance(cfg.get("thinker_config"), dict) and \
            isinstance(cfg["thinker_config"].get("text_config"), dict):
        tc = cfg["thinker_config"]["text_config"]
    elif isinstance(cfg.get("text_config"), dict) and "hidden_size" in cfg["text_config"]:
        tc = cfg["text_config"]
    out = dict(cfg)
    out.update(tc)
    return out


class Model:
    def __init__(self, d):
        with open(os.path.join(d, "config.json")) as f:
            c = text_config(json.load(f))
        self.hidden = int(c["hidden_size"])
        self.n_layers = int(c["num_hidden_layers"])
        self.n_heads = int(c["num_attention_heads"])
        self.n_kv = int(c.get("num_key_value_heads") or self.n_heads)
        self.head_dim = int(c.get("head_dim") or self.hidden // self.n_heads)
        self.inter = int(c["intermediate_size"])
        self.eps = float(c.get("rms_norm_eps", 1e-6))
        self.theta = float(c.get("rope_theta", 10000.0))
        rs = c.get("rope_scaling") or {}
        self.mrope = list(rs["mrope_section"]) if "mrope_section" in rs else None
        if self.mrope is not None:
            assert len(self.mrope) == 3 and sum(self.mrope) == self.head_dim // 2, \
                "mrope_section %s vs head_dim %d" % (self.mrope, self.head_dim)
        assert self.n_heads % self.n_kv == 0
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
        assert self.prefix is not None, "%s: no layer 0 under any known prefix" % d

    def tensor(self, layer, suffix, optional=False):
        name = "%s%d.%s" % (self.prefix, layer, suffix)
        if name not in self.where:
            if optional:
                return None
            raise KeyError(name)
        return self.where[name].get(name).astype(np.float64)

    def layer(self, n):
        """Layer n's weights in float64, HF layout [out, in]."""
        w = {"in_norm": self.tensor(n, "input_layernorm.weight"),
             "post_norm": self.tensor(n, "post_attention_layernorm.weight")}
        for p in ("q", "k", "v", "o"):
            w[p] = self.tensor(n, "self_attn.%s_proj.weight" % p)
        for p in ("q", "k", "v"):
            w["b" + p] = self.tensor(n, "self_attn.%s_proj.bias" % p, optional=True)
        for p in ("gate", "up", "down"):
            w[p] = self.tensor(n, "mlp.%s_proj.weight" % p)
        return w


class Calib:
    def __init__(self, path):
        f = StFile(path)
        self.embeds = f.get("inputs_embeds").astype(np.float64)
        self.T, self.hidden = self.embeds.shape
        self.modality = f.get("modality") if "modality" in f.entries else \
            np.zeros(self.T, np.uint8)
        self.seq_lens = f.get("seq_lens").astype(np.int64)
        assert self.seq_lens.sum() == self.T, "seq_lens sum != tokens"
        if "position_ids" in f.entries:
            p = f.get("position_ids").astype(np.int64)
            if p.ndim == 1:
                p = np.stack([p, p, p])
            assert p.shape == (3, self.T), "position_ids shape %s" % (p.shape,)
            self.pos_rows = f.entries["position_ids"][1][0] if \
                len(f.entries["position_ids"][1]) == 2 else 1
        else:
            p = np.concatenate([np.arange(n) for n in self.seq_lens])
            p = np.stack([p, p, p])
            self.pos_rows = 0
        self.pos = p


# ---------------------------------------------------------------------------
# the layer, float64


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x * 0.5 * (1.0 + np.tanh(0.5 * x))


def rope_tables(pos, head_dim, theta, mrope):
    """cos, sin [T, head_dim] for positions pos [3, T]: frequency i takes its
    position from row 0 (t), 1 (h) or 2 (w) by mrope section, row 0 without."""
    half = head_dim // 2
    inv_freq = theta ** (-(2.0 * np.arange(half)) / head_dim)
    rows = np.zeros(half, np.int64)
    if mrope is not None:
        s0, s1, _ = mrope
        rows[s0:s0 + s1] = 1
        rows[s0 + s1:] = 2
    ang = pos[rows, :].T.astype(np.float64) * inv_freq  # [T, half]
    c, s = np.cos(ang), np.sin(ang)
    return np.concatenate([c, c], axis=1), np.concatenate([s, s], axis=1)


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rope(x, cos, sin):
    """x [T, heads, hd]."""
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]


def attention(q, k, v, seq_lens):
    """q [T, H, hd], k, v [T, KV, hd] -> [T, H, hd]: causal within each
    sequence, head h reads kv head h // (H / KV), softmax in float64."""
    T, H, hd = q.shape
    g = H // k.shape[1]
    out = np.zeros_like(q)
    a = 0
    for n in seq_lens:
        n = int(n)
        qs, ks, vs = q[a:a + n], np.repeat(k[a:a + n], g, axis=1), \
            np.repeat(v[a:a + n], g, axis=1)
        sc = np.einsum("thd,shd->hts", qs, ks) / math.sqrt(hd)
        sc = np.where(np.tril(np.ones((n, n), bool))[None], sc, -np.inf)
        sc -= sc.max(axis=-1, keepdims=True)
        p = np.exp(sc)
        p /= p.sum(axis=-1, keepdims=True)
        out[a:a + n] = np.einsum("hts,shd->thd", p, vs)
        a += n
    return out


def layer_forward(m, w, h, pos, seq_lens, cos_sin=None):
    """One decoder layer on h [T, hidden] (float64); returns the new h."""
    T = h.shape[0]
    H, KV, hd = m.n_heads, m.n_kv, m.head_dim
    cos, sin = cos_sin if cos_sin is not None else \
        rope_tables(pos, hd, m.theta, m.mrope)
    n1 = rmsnorm(h, w["in_norm"], m.eps)
    q, k, v = n1 @ w["q"].T, n1 @ w["k"].T, n1 @ w["v"].T
    if w["bq"] is not None:
        q = q + w["bq"]
    if w["bk"] is not None:
        k = k + w["bk"]
    if w["bv"] is not None:
        v = v + w["bv"]
    q = apply_rope(q.reshape(T, H, hd), cos, sin)
    k = apply_rope(k.reshape(T, KV, hd), cos, sin)
    att = attention(q, k, v.reshape(T, KV, hd), seq_lens).reshape(T, H * hd)
    h = h + att @ w["o"].T
    n2 = rmsnorm(h, w["post_norm"], m.eps)
    return h + (silu(n2 @ w["gate"].T) * (n2 @ w["up"].T)) @ w["down"].T


# ---------------------------------------------------------------------------
# self-test: the reference against plain loops and HF's own formulation


def naive_layer(m, w, h, pos, seq_lens):
    """The same layer written with Python loops and math only: RoPE as a 2-D
    rotation of the pairs (i, i + hd/2), attention token by token."""
    T = len(h)
    H, KV, hd = m.n_heads, m.n_kv, m.head_dim
    half = hd // 2
    W = {k: (v.tolist() if v is not None else None) for k, v in w.items()}

    def lin(x, Wm, b):
        return [sum(Wm[o][i] * x[i] for i in range(len(x))) + (b[o] if b else 0.0)
                for o in range(len(Wm))]

    def norm(x, g):
        r = math.sqrt(sum(t * t for t in x) / len(x) + m.eps)
        return [x[i] / r * g[i] for i in range(len(x))]

    def row_of(i):
        if m.mrope is None:
            return 0
        if i < m.mrope[0]:
            return 0
        return 1 if i < m.mrope[0] + m.mrope[1] else 2

    def rot(x, t):
        y = list(x)
        for i in range(half):
            a = pos[row_of(i)][t] * m.theta ** (-2.0 * i / hd)
            c, s = math.cos(a), math.sin(a)
            y[i] = x[i] * c - x[i + half] * s
            y[i + half] = x[i + half] * c + x[i] * s
        return y

    h = [list(map(float, r)) for r in h]
    qs, ks, vs = [], [], []
    for t in range(T):
        n1 = norm(h[t], W["in_norm"])
        q, k, v = lin(n1, W["q"], W["bq"]), lin(n1, W["k"], W["bk"]), lin(n1, W["v"], W["bv"])
        qs.append([rot(q[j * hd:(j + 1) * hd], t) for j in range(H)])
        ks.append([rot(k[j * hd:(j + 1) * hd], t) for j in range(KV)])
        vs.append([v[j * hd:(j + 1) * hd] for j in range(KV)])
    seq_start, a = [], 0
    for n in seq_lens:
        seq_start += [a] * int(n)
        a += int(n)
    out = []
    for t in range(T):
        att = []
        for j in range(H):
            kv = j // (H // KV)
            sc = [sum(qs[t][j][d] * ks[s][kv][d] for d in range(hd)) / math.sqrt(hd)
                  for s in range(seq_start[t], t + 1)]
            mx = max(sc)
            e = [math.exp(x - mx) for x in sc]
            z = sum(e)
            o = [0.0] * hd
            for i, s in enumerate(range(seq_start[t], t + 1)):
                for d in range(hd):
                    o[d] += e[i] / z * vs[s][kv][d]
            att += o
        x = [a + b for a, b in zip(h[t], lin(att, W["o"], None))]
        n2 = norm(x, W["post_norm"])
        gt, up = lin(n2, W["gate"], None), lin(n2, W["up"], None)
        act = [g / (1.0 + math.exp(-g)) * u for g, u in zip(gt, up)]
        out.append([a + b for a, b in zip(x, lin(act, W["down"], None))])
    return np.array(out)


def hf_mrope_tables(pos, head_dim, theta, mrope):
    """cos, sin as HF's Qwen2-VL rotary embedding and
    apply_multimodal_rotary_pos_emb build them: per row r, emb = cat(freqs,
    freqs) of width hd; split by mrope_section * 2; chunk j takes row j % 3."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim)
    cos3, sin3 = [], []
    for r in range(3):
        freqs = np.outer(pos[r].astype(np.float64), inv_freq)
        emb = np.concatenate([freqs, freqs], axis=1)
        cos3.append(np.cos(emb))
        sin3.append(np.sin(emb))
    sec = list(mrope) * 2
    cuts = np.cumsum(sec)[:-1]
    cos = np.concatenate([c[r % 3] for r, c in enumerate(zip(*[np.split(x, cuts, axis=1)
                                                             for x in cos3]))], axis=1)
    sin = np.concatenate([c[r % 3] for r, c in enumerate(zip(*[np.split(x, cuts, axis=1)
                                                             for x in sin3]))], axis=1)
    return cos, sin


def self_test(tap):
    rng = np.random.default_rng(7)

    # RoPE by hand: hd 4, theta 100 -> inv_freq [1, 0.1]; position 1 rotates
    # the pair (x0, x2) by 1 rad and (x1, x3) by 0.1 rad.
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    cos, sin = rope_tables(np.array([[1], [1], [1]]), 4, 100.0, None)
    c1, s1, c2, s2 = math.cos(1), math.sin(1), math.cos(0.1), math.sin(0.1)
    want = [1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1, 4 * c2 + 2 * s2]
    got = apply_rope(x, cos, sin)[0, 0]
    tap.check(np.max(np.abs(got - want)) < 1e-15,
              "self-test: RoPE rotate-half on a hand-computed case")

    # mrope rows: hd 4, sections [1, 1, 0]: frequency 0 from row t (pos 1),
    # frequency 1 from row h (pos 10); row w (pos 99) unused.
    cos, sin = rope_tables(np.array([[1], [10], [99]]), 4, 100.0, [1, 1, 0])
    c2, s2 = math.cos(1.0), math.sin(1.0)
    want = [1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1, 4 * c2 + 2 * s2]
    got = apply_rope(x, cos, sin)[0, 0]
    tap.check(np.max(np.abs(got - want)) < 1e-15,
              "self-test: mrope section rows on a hand-computed case")

    # The section/row form equals HF's split-and-interleave construction.
    hd, T, sec = 16, 9, [2, 3, 3]
    pos = rng.integers(0, 50, size=(3, T))
    a = rope_tables(pos, hd, 1e4, sec)
    b = hf_mrope_tables(pos, hd, 1e4, sec)
    tap.check(max(np.max(np.abs(a[0] - b[0])), np.max(np.abs(a[1] - b[1]))) < 1e-15,
              "self-test: mrope tables equal HF's apply_multimodal_rotary_pos_emb")
    # ... and with three equal rows mrope is plain RoPE.
    p1 = np.stack([pos[0]] * 3)
    a, b = rope_tables(p1, hd, 1e4, sec), rope_tables(p1, hd, 1e4, None)
    tap.check(np.max(np.abs(a[0] - b[0])) + np.max(np.abs(a[1] - b[1])) == 0,
              "self-test: mrope with equal rows is plain RoPE")

    # Attention: numpy against token-by-token loops, 3 sequences, GQA 4/2.
    seq = [5, 1, 7]
    T, H, KV, hd = sum(seq), 4, 2, 6
    q, k, v = rng.normal(size=(T, H, hd)), rng.normal(size=(T, KV, hd)), \
        rng.normal(size=(T, KV, hd))
    got = attention(q, k, v, seq)
    want = np.zeros_like(q)
    a = 0
    for n in seq:
        for t in range(a, a + n):
            for j in range(H):
                kv = j // 2
                sc = [float(q[t, j] @ k[s, kv]) / math.sqrt(hd) for s in range(a, t + 1)]
                e = [math.exp(z - max(sc)) for z in sc]
                for i, s in enumerate(range(a, t + 1)):
                    want[t, j] += e[i] / sum(e) * v[s, kv]
        a += n
    tap.check(np.max(np.abs(got - want)) < 1e-13,
              "self-test: attention equals a per-token loop (causal, per sequence, GQA)")

    # The whole layer: numpy against plain loops, with mrope and biases.
    m = types.SimpleNamespace()
    m.hidden, m.n_heads, m.n_kv, m.head_dim, m.inter = 12, 4, 2, 6, 20
    m.eps, m.theta, m.mrope = 1e-6, 1e4, [1, 1, 1]
    D, qd, kd = m.hidden, m.n_heads * m.head_dim, m.n_kv * m.head_dim
    w = {"in_norm": 1 + 0.1 * rng.normal(size=D), "post_norm": 1 + 0.1 * rng.normal(size=D),
         "q": rng.normal(size=(qd, D)) / 3, "k": rng.normal(size=(kd, D)) / 3,
         "v": rng.normal(size=(kd, D)) / 3, "o": rng.normal(size=(D, qd)) / 3,
         "bq": rng.normal(size=qd), "bk": rng.normal(size=kd), "bv": rng.normal(size=kd),
         "gate": rng.normal(size=(m.inter, D)) / 3, "up": rng.normal(size=(m.inter, D)) / 3,
         "down": rng.normal(size=(D, m.inter)) / 3}
    seq = [4, 6, 3]
    T = sum(seq)
    h = rng.normal(size=(T, D)) * 2
    pos = rng.integers(0, 30, size=(3, T))
    got = layer_forward(m, w, h, pos, seq)
    want = naive_layer(m, w, h, pos.tolist(), seq)
    e1 = np.max(np.abs(got - want)) / np.max(np.abs(want))
    m.mrope = None
    for b in ("bq", "bk", "bv"):
        w[b] = None
    got = layer_forward(m, w, h, pos, seq)
    want = naive_layer(m, w, h, pos.tolist(), seq)
    e2 = np.max(np.abs(got - want)) / np.max(np.abs(want))
    tap.check(max(e1, e2) < 1e-13,
              "self-test: layer equals a plain-loop layer (mrope+bias %.1e, rope %.1e)"
              % (e1, e2))

    # BF16 / F16 decoding and the writer, round trip.
    path = "ref_forward_selftest.%d.safetensors" % os.getpid()  # in the cwd
    bf = np.array([0x3F80, 0xC000, 0x0000, 0x7F80], np.uint16)
    st_write(path, [("b", "BF16", [2, 2], bf.tobytes()),
                    ("h", "F16", [2], np.array([1.5, -0.25], np.float16).tobytes()),
                    ("i", "I64", [1, 2], np.array([[-3, 1 << 40]], np.int64).tobytes())],
             {"format": "pt"})
    f = StFile(path)
    ok = (f.get("b").tolist() == [[1.0, -2.0], [0.0, math.inf]] and
          f.get("h").tolist() == [1.5, -0.25] and f.get("i").tolist() == [[-3, 1 << 40]] and
          f.meta == {"format": "pt"})
    del f
    os.unlink(path)
    tap.check(ok, "self-test: safetensors BF16/F16/I64 decoding and writer round trip")


# ---------------------------------------------------------------------------
# the comparison against masq


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, cond, msg):
        self.n += 1
        if not cond:
            self.failed += 1
        print("%s %d - %s" % ("ok" if cond else "not ok", self.n, msg))
        sys.stdout.flush()

    def diag(self, msg):
        for line in msg.splitlines():
            print("# " + line)


def errors(ref, got, inp):
    """(rel max, rel rms, worst per-token rel, rel max of the update)."""
    d = ref - got
    rel_max = np.max(np.abs(d)) / max(1e-30, np.max(np.abs(ref)))
    rel_rms = math.sqrt(np.sum(d * d) / max(1e-300, np.sum(ref * ref)))
    tok = np.max(np.linalg.norm(d, axis=1) / np.maximum(1e-30, np.linalg.norm(ref, axis=1)))
    # The update (output - input) can be orders of magnitude smaller than the
    # residual stream; its error excludes the float32 rounding of the sums
    # h + attn and h + mlp, one unit in the last place of the larger of
    # input and output, which no engine can avoid.
    allow = np.spacing(np.maximum(np.abs(inp), np.abs(ref)).astype(np.float32))
    upd = ref - inp
    rel_upd = np.max(np.maximum(0.0, np.abs(d) - allow)) / max(1e-30, np.max(np.abs(upd)))
    return rel_max, rel_rms, tok, rel_upd


def run_case(tap, label, model_dir, calib_path, h_path, tol, chain_tol):
    upd_ratio = UPDATE_TOL / REL_TOL
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
             "position rows %d, mrope %s, heads %d/%d x %d, bias %s" %
             (label, c.T, mods[0], mods[1], mods[2], len(c.seq_lens),
              c.seq_lens.tolist()[:8], c.pos_rows, m.mrope, m.n_heads, m.n_kv, m.head_dim,
              "yes" if m.tensor(0, "self_attn.q_proj.bias", optional=True) is not None else "no"))
    cs = rope_tables(c.pos, m.head_dim, m.theta, m.mrope)
    chain = c.embeds
    prev = c.embeds
    worst_chain = 0.0
    for n in range(m.n_layers):
        w = m.layer(n)
        got = hf.get("layers.%d.output" % n).astype(np.float64)
        ref = layer_forward(m, w, prev, c.pos, c.seq_lens, cs)
        rm, rr, tk, ru = errors(ref, got, prev)
        per_mod = []
        for k, nm in ((0, "text"), (1, "vision"), (2, "audio")):
            sel = c.modality == k
            if sel.any():
                per_mod.append("%s %.1e" % (nm, errors(ref[sel], got[sel], prev[sel])[2]))
        tap.diag("%s layer %d: rms %.1e, worst token %.1e (%s), update %.1e, "
                 "max|h| %.3g, max|update| %.3g" %
                 (label, n, rr, tk, ", ".join(per_mod), ru, np.max(np.abs(ref)),
                  np.max(np.abs(ref - prev))))
        ok = np.all(np.isfinite(got)) and max(rm, rr, tk) <= tol and ru <= tol * upd_ratio
        tap.check(ok, "%s layer %d: rel max err %.1e <= %.0e (rms %.1e, token %.1e, "
                  "update %.1e <= %.0e)" % (label, n, rm, tol, rr, tk, ru, tol * upd_ratio))
        chain = layer_forward(m, w, chain, c.pos, c.seq_lens, cs)
        worst_chain = max(worst_chain, errors(chain, got, prev)[0])
        prev = got
    rm, rr, tk, ru = errors(chain, prev, c.embeds)
    tap.check(np.all(np.isfinite(prev)) and max(rm, rr, tk) <= chain_tol,
              "%s chained %d layers: rel max err %.1e <= %.0e (rms %.1e, token %.1e; "
              "worst layer %.1e)" % (label, m.n_layers, rm, chain_tol, rr, tk, worst_chain))


# ---------------------------------------------------------------------------
# variants


def make_variant(src_model, src_calib, dst, mode):
    """dst/model: src_model's config without rope_scaling (everywhere), the
    weights symlinked; dst/calib.safetensors: src_calib with position_ids as
    one row and each sequence's first token scaled down (mode "1row"), or without position_ids and with the config kept
    as it is (mode "none", so positions default to 0..len-1)."""
    assert mode in ("1row", "none")
    md = os.path.join(dst, "model")
    os.makedirs(md, exist_ok=True)
    with open(os.path.join(src_model, "config.json")) as f:
        cfg = json.load(f)
    if mode == "1row":
        def strip(d):
            if isinstance(d, dict):
                d.pop("rope_scaling", None)
                for v in d.values():
                    strip(v)
        strip(cfg)
    with open(os.path.join(md, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for fn in os.listdir(src_model):
        if fn.endswith(".safetensors") or fn.endswith(".index.json"):
            link = os.path.join(md, fn)
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(os.path.abspath(os.path.join(src_model, fn)), link)
    f = StFile(src_calib)
    out = []
    for name in f.names():
        if name == "position_ids":
            continue
        dt, shape, data = f.raw(name)
        if name == "inputs_embeds" and mode == "1row":
            # The first token of every sequence shrunk to rms ~1e-3, where
            # rms_norm_eps (1e-6 against mean(x^2) ~1e-6) visibly matters.
            e = f.get(name)
            e[np.cumsum(np.r_[0, f.get("seq_lens")[:-1]])] *= 1e-4
            dt, data = "F32", e.astype("<f4").tobytes()
        out.append((name, dt, shape, bytes(data)))
    if mode == "1row":
        # Not the default 0..len-1: sequence s starts at 5 s, and every
        # fourth token repeats its predecessor's position (as image blocks do).
        lens = f.get("seq_lens").astype(np.int64)
        pos = []
        for s, n in enumerate(lens):
            p = np.arange(n) + 5 * s
            p[3::4] -= 1
            pos.append(p)
        pos = np.concatenate(pos).astype(np.int64)
        out.append(("position_ids", "I64", [len(pos)], pos.tobytes()))
    meta = dict(f.meta)
    meta["source"] = "ref_forward.py variant %s of %s" % (mode, meta.get("source", "?"))
    st_write(os.path.join(dst, "calib.safetensors"), out, meta)


def main(argv):
    tol, chain_tol, selftest, cases = REL_TOL, None, False, []
    i = 0
    if argv[:1] == ["--make-variant"]:
        if len(argv) != 5 or argv[4] not in ("1row", "none"):
            sys.stderr.write(__doc__)
            return 2
        make_variant(argv[1], argv[2], argv[3], argv[4])
        return 0
    while i < len(argv):
        a = argv[i]
        if a == "--tol":
            tol = float(argv[i + 1])
            i += 2
        elif a == "--chain-tol":
            chain_tol = float(argv[i + 1])
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
