#!/usr/bin/python3
"""Independent numpy reference for the Qwen2.5-VL vision tower
(Qwen2_5_VisionTransformerPretrainedModel in transformers 4.50-4.53).

Written from the upstream Python source (see NOTES.md for file/line references),
not from the C implementation it is meant to test.

Usage:
  ref_vision.py MODEL_DIR PIXELS.safetensors OUT.safetensors [--blocks] [--batch] [--f64]
  ref_vision.py --make-model DIR --seed N [--window-size W] [--fullatt 1,3] [--depth D]
               [--set key=json ...] [--dtype BF16|F16|F32] [--prefix visual.|model.visual.] [--shards K]
  ref_vision.py --make-pixels OUT.safetensors --grids "1,4,6;1,8,8" --seed N [--still]
               (--still: both temporal slices equal, as the processor makes them for a still image)

Only numpy is needed (/usr/bin/python3).
"""

import json
import math
import os
import struct
import sys

import numpy as np

SOURCE = ("transformers v4.50.0 modeling_qwen2_5_vl.py (Qwen2_5_VisionTransformerPretrainedModel); "
          "same computation as huggingface/transformers@00b676f8f0489b88652a31d70751cc540dd06305")

# ----------------------------------------------------------------------------------------------
# safetensors I/O (written by hand: u64 LE header length, JSON header, raw little-endian data)
# ----------------------------------------------------------------------------------------------

_ST_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "U16": np.dtype("<u2"), "U32": np.dtype("<u4"), "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}


def bf16_bits_to_f32(u16):
    """bf16 -> float32 exactly: the bf16 bits are the upper 16 bits of the float32."""
    return (np.asarray(u16, dtype=np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x):
    """float32 -> bf16 bits, round to nearest even (NaN kept quiet)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = np.isnan(x)
    rounded = np.where(nan, (u >> 16) | 0x40, rounded)
    return rounded.astype(np.uint16)


class SafeTensorsFile:
    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            if n > 100 * 1024 * 1024:
                raise ValueError("%s: implausible safetensors header length %d" % (path, n))
            self.header = json.loads(f.read(n).decode("utf-8"))
        self.data_start = 8 + n
        self.metadata = self.header.pop("__metadata__", None) or {}

    def keys(self):
        return list(self.header.keys())

    def raw(self, name):
        """(dtype string, shape, numpy array in stored dtype; BF16 as uint16)."""
        ent = self.header[name]
        dt, shape = ent["dtype"], tuple(ent["shape"])
        a, b = ent["data_offsets"]
        with open(self.path, "rb") as f:
            f.seek(self.data_start + a)
            buf = f.read(b - a)
        if len(buf) != b - a:
            raise ValueError("%s: tensor %s truncated" % (self.path, name))
        if dt == "BF16":
            arr = np.frombuffer(buf, dtype="<u2")
        elif dt in _ST_DTYPES:
            arr = np.frombuffer(buf, dtype=_ST_DTYPES[dt])
        else:
            raise ValueError("%s: tensor %s has unsupported dtype %s" % (self.path, name, dt))
        count = int(np.prod(shape)) if len(shape) else 1
        if arr.size != count:
            raise ValueError("%s: tensor %s size mismatch" % (self.path, name))
        return dt, shape, arr.reshape(shape)

    def get_f32(self, name):
        dt, shape, arr = self.raw(name)
        if dt == "BF16":
            return bf16_bits_to_f32(arr).reshape(shape)
        if dt in ("F32", "F16", "F64"):
            return arr.astype(np.float32)
        raise ValueError("%s: tensor %s is %s, not a float" % (self.path, name, dt))

    def get(self, name):
        dt, shape, arr = self.raw(name)
        if dt == "BF16":
            return bf16_bits_to_f32(arr).reshape(shape)
        return np.array(arr)


def write_safetensors(path, tensors, metadata=None):
    """tensors: dict name -> (dtype string, numpy array). dtype BF16 expects uint16 bits."""
    header = {}
    blobs = []
    off = 0
    for name in tensors:
        dt, arr = tensors[name]
        if dt == "BF16":
            a = np.ascontiguousarray(arr, dtype="<u2")
        else:
            a = np.ascontiguousarray(arr, dtype=_ST_DTYPES[dt])
        b = a.tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# config and weights
# ----------------------------------------------------------------------------------------------

# Qwen2_5_VLVisionConfig defaults (configuration_qwen2_5_vl.py)
VISION_DEFAULTS = dict(depth=32, hidden_size=3584, hidden_act="silu", intermediate_size=3420,
                       num_heads=16, in_channels=3, patch_size=14, spatial_merge_size=2,
                       temporal_patch_size=2, window_size=112, out_hidden_size=3584,
                       fullatt_block_indexes=[7, 15, 23, 31])


def load_vision_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    vc = cfg.get("vision_config")
    if vc is None:
        if "depth" in cfg and "spatial_merge_size" in cfg:
            vc = cfg
        else:
            raise ValueError("config.json has no vision_config")
    out = dict(VISION_DEFAULTS)
    for k in VISION_DEFAULTS:
        if k in vc:
            out[k] = vc[k]
    # transformers reads `in_channels`; the released Qwen2.5-VL config.json spells it `in_chans`
    # (which transformers silently ignores, falling back to 3).  Accept either.
    if "in_channels" not in vc and "in_chans" in vc:
        out["in_channels"] = vc["in_chans"]
    out["fullatt_block_indexes"] = [int(i) for i in out["fullatt_block_indexes"]]
    for k in ("depth", "hidden_size", "intermediate_size", "num_heads", "in_channels", "patch_size",
              "spatial_merge_size", "temporal_patch_size", "window_size", "out_hidden_size"):
        out[k] = int(out[k])
    if out["hidden_size"] % out["num_heads"]:
        raise ValueError("hidden_size not divisible by num_heads")
    if (out["hidden_size"] // out["num_heads"]) % 4:
        raise ValueError("head_dim must be a multiple of 4 for the 2-D vision rotary")
    return out


def open_checkpoint(model_dir):
    """Returns dict tensor-name -> SafeTensorsFile."""
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    single = os.path.join(model_dir, "model.safetensors")
    where = {}
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        files = {}
        for name, fn in wm.items():
            if "visual." not in name:
                continue
            if fn not in files:
                files[fn] = SafeTensorsFile(os.path.join(model_dir, fn))
            where[name] = files[fn]
    elif os.path.exists(single):
        st = SafeTensorsFile(single)
        for name in st.keys():
            where[name] = st
    else:
        raise ValueError("%s: no model.safetensors or model.safetensors.index.json" % model_dir)
    return where


def load_vision_weights(model_dir, cfg):
    where = open_checkpoint(model_dir)
    prefix = None
    for p in ("visual.", "model.visual."):
        if p + "patch_embed.proj.weight" in where:
            prefix = p
            break
    if prefix is None:
        raise ValueError("no visual.patch_embed.proj.weight (nor model.visual.*) in checkpoint")

    def g(name):
        full = prefix + name
        if full not in where:
            raise ValueError("missing tensor %s" % full)
        return where[full].get_f32(full)

    E, I, O = cfg["hidden_size"], cfg["intermediate_size"], cfg["out_hidden_size"]
    C, T, P, m = cfg["in_channels"], cfg["temporal_patch_size"], cfg["patch_size"], cfg["spatial_merge_size"]
    W = {"prefix": prefix}
    pe = g("patch_embed.proj.weight")
    if pe.shape != (E, C, T, P, P):
        raise ValueError("patch_embed.proj.weight shape %s, expected %s" % (pe.shape, (E, C, T, P, P)))
    W["patch_embed"] = pe.reshape(E, C * T * P * P)
    shapes = {"norm1.weight": (E,), "norm2.weight": (E,), "attn.qkv.weight": (3 * E, E),
              "attn.qkv.bias": (3 * E,), "attn.proj.weight": (E, E), "attn.proj.bias": (E,),
              "mlp.gate_proj.weight": (I, E), "mlp.gate_proj.bias": (I,),
              "mlp.up_proj.weight": (I, E), "mlp.up_proj.bias": (I,),
              "mlp.down_proj.weight": (E, I), "mlp.down_proj.bias": (E,)}
    W["blocks"] = []
    for b in range(cfg["depth"]):
        blk = {}
        for k, shp in shapes.items():
            t = g("blocks.%d.%s" % (b, k))
            if t.shape != shp:
                raise ValueError("blocks.%d.%s shape %s, expected %s" % (b, k, t.shape, shp))
            blk[k] = t
        W["blocks"].append(blk)
    H = E * m * m
    mshapes = {"ln_q.weight": (E,), "mlp.0.weight": (H, H), "mlp.0.bias": (H,),
               "mlp.2.weight": (O, H), "mlp.2.bias": (O,)}
    W["merger"] = {}
    for k, shp in mshapes.items():
        t = g("merger." + k)
        if t.shape != shp:
            raise ValueError("merger.%s shape %s, expected %s" % (k, t.shape, shp))
        W["merger"][k] = t
    return W


# ----------------------------------------------------------------------------------------------
# index computations (rot_pos_emb position ids, get_window_index)
# ----------------------------------------------------------------------------------------------

def rot_pos_ids(t, h, w, m):
    """(h, w) position of every patch, in the order of pixel_values (rot_pos_emb).
    Patch order is (t, h//m, w//m, m, m): each m*m consecutive patches are one merge unit."""
    hpos = np.broadcast_to(np.arange(h)[:, None], (h, w))
    hpos = hpos.reshape(h // m, m, w // m, m).transpose(0, 2, 1, 3).reshape(-1)
    wpos = np.broadcast_to(np.arange(w)[None, :], (h, w))
    wpos = wpos.reshape(h // m, m, w // m, m).transpose(0, 2, 1, 3).reshape(-1)
    pos = np.stack([hpos, wpos], axis=-1)
    return np.tile(pos, (t, 1)).astype(np.int64)


def window_index(grids, m, window_size, patch_size):
    """get_window_index: returns (window_index [sum t*h*w/m^2] int64, cu_window_seqlens list,
    before unique_consecutive)."""
    vws = window_size // m // patch_size
    if vws <= 0:
        raise ValueError("window_size // spatial_merge_size // patch_size must be >= 1")
    U = m * m
    out = []
    cu = [0]
    base = 0
    for (gt, gh, gw) in grids:
        lh, lw = gh // m, gw // m
        index = np.arange(gt * lh * lw).reshape(gt, lh, lw)
        pad_h = vws - lh % vws          # NB: a full extra strip of padding when lh % vws == 0
        pad_w = vws - lw % vws
        nwh = (lh + pad_h) // vws
        nww = (lw + pad_w) // vws
        padded = np.full((gt, lh + pad_h, lw + pad_w), -100, dtype=np.int64)
        padded[:, :lh, :lw] = index
        padded = padded.reshape(gt, nwh, vws, nww, vws).transpose(0, 1, 3, 2, 4)
        padded = padded.reshape(gt, nwh * nww, vws, vws)
        seqlens = (padded != -100).sum(axis=(2, 3)).reshape(-1)
        flat = padded.reshape(-1)
        out.append(flat[flat != -100] + base)
        cu.extend((np.cumsum(seqlens) * U + cu[-1]).tolist())
        base += gt * lh * lw
    return np.concatenate(out).astype(np.int64), cu


def unique_consecutive(xs):
    out = []
    for x in xs:
        if not out or out[-1] != x:
            out.append(int(x))
    return out


def full_cu_seqlens(grids):
    """cu_seqlens for the full-attention blocks: one segment per temporal frame (h*w patches)."""
    cu = [0]
    for (gt, gh, gw) in grids:
        for _ in range(gt):
            cu.append(cu[-1] + gh * gw)
    return cu


# ----------------------------------------------------------------------------------------------
# layers
# ----------------------------------------------------------------------------------------------

RMS_EPS = 1e-6           # hard-coded in Qwen2_5_VLVisionBlock and Qwen2_5_VLPatchMerger
ROPE_THETA = 10000.0     # Qwen2_5_VisionRotaryEmbedding default


def rms_norm(x, weight, dt):
    x = x.astype(dt)
    var = np.mean(x * x, axis=-1, keepdims=True)
    return np.asarray(weight, dtype=dt) * (x * (dt(1.0) / np.sqrt(var + dt(RMS_EPS))))


def _erf(x):
    return np.frompyfunc(math.erf, 1, 1)(x.astype(np.float64)).astype(np.float64)


def activation(name, x, dt):
    with np.errstate(over="ignore"):
        if name == "silu":
            return x / (dt(1.0) + np.exp(-x))
        if name == "gelu":                   # exact (erf) GELU, nn.GELU() / ACT2FN["gelu"]
            return (0.5 * x.astype(np.float64) * (1.0 + _erf(x / math.sqrt(2.0)))).astype(dt)
        if name in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast"):
            x64 = x.astype(np.float64)
            return (0.5 * x64 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64 ** 3)))).astype(dt)
        if name == "quick_gelu":
            return x / (dt(1.0) + np.exp(dt(-1.702) * x))
        if name == "relu":
            return np.maximum(x, dt(0))
    raise ValueError("unsupported hidden_act %r" % name)


def rotary_inv_freq(head_dim, dt):
    """Qwen2_5_VisionRotaryEmbedding(head_dim // 2): inv_freq has head_dim // 4 entries."""
    dim = head_dim // 2
    if dt == np.float32:
        return (np.float32(1.0) / (np.float32(ROPE_THETA) **
                                   (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))).astype(np.float32)
    return 1.0 / (ROPE_THETA ** (np.arange(0, dim, 2, dtype=np.float64) / dim))


def rotary_cos_sin(pos, head_dim, dt):
    """pos: [n, 2] (h, w).  rotary_pos_emb = [h*inv_freq, w*inv_freq] (head_dim/2),
    emb = cat(rpe, rpe) (head_dim); returns cos(emb), sin(emb)."""
    inv = rotary_inv_freq(head_dim, dt)
    fh = pos[:, 0:1].astype(dt) * inv[None, :]
    fw = pos[:, 1:2].astype(dt) * inv[None, :]
    rpe = np.concatenate([fh, fw], axis=-1)
    emb = np.concatenate([rpe, rpe], axis=-1)
    return np.cos(emb).astype(dt), np.sin(emb).astype(dt)


def rotate_half(x):
    d = x.shape[-1] // 2
    return np.concatenate([-x[..., d:], x[..., :d]], axis=-1)


def attention(x, blk, cos, sin, cu, num_heads, dt):
    """Qwen2_5_VLVisionAttention; x already normed, in the (windowed) order the model uses."""
    n, E = x.shape
    hd = E // num_heads
    qkv = x @ np.asarray(blk["attn.qkv.weight"], dtype=dt).T + np.asarray(blk["attn.qkv.bias"], dtype=dt)
    qkv = qkv.reshape(n, 3, num_heads, hd)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]               # [n, H, hd]
    c, s = cos[:, None, :], sin[:, None, :]
    q = q * c + rotate_half(q) * s
    k = k * c + rotate_half(k) * s
    scaling = dt(hd ** -0.5)
    out = np.empty((n, num_heads, hd), dtype=dt)
    for a, b in zip(cu[:-1], cu[1:]):
        if b <= a:
            continue
        for hh in range(num_heads):
            sc = (q[a:b, hh, :] @ k[a:b, hh, :].T) * scaling
            sc = sc - sc.max(axis=-1, keepdims=True)
            p = np.exp(sc)
            p = p / p.sum(axis=-1, keepdims=True)
            out[a:b, hh, :] = p @ v[a:b, hh, :]
    out = out.reshape(n, E)
    return out @ np.asarray(blk["attn.proj.weight"], dtype=dt).T + np.asarray(blk["attn.proj.bias"], dtype=dt)


def mlp(x, blk, act, dt):
    g = x @ np.asarray(blk["mlp.gate_proj.weight"], dtype=dt).T + np.asarray(blk["mlp.gate_proj.bias"], dtype=dt)
    u = x @ np.asarray(blk["mlp.up_proj.weight"], dtype=dt).T + np.asarray(blk["mlp.up_proj.bias"], dtype=dt)
    return (activation(act, g, dt) * u) @ np.asarray(blk["mlp.down_proj.weight"], dtype=dt).T + np.asarray(blk["mlp.down_proj.bias"], dtype=dt)


def vision_block(x, blk, cos, sin, cu, cfg, dt):
    x = x + attention(rms_norm(x, blk["norm1.weight"], dt), blk, cos, sin, cu, cfg["num_heads"], dt)
    x = x + mlp(rms_norm(x, blk["norm2.weight"], dt), blk, cfg["hidden_act"], dt)
    return x


def merger(x, M, cfg, dt):
    m = cfg["spatial_merge_size"]
    E = x.shape[1]
    y = rms_norm(x, M["ln_q.weight"], dt).reshape(-1, E * m * m)
    y = y @ np.asarray(M["mlp.0.weight"], dtype=dt).T + np.asarray(M["mlp.0.bias"], dtype=dt)
    y = activation("gelu", y, dt)            # nn.GELU() default: exact erf
    return y @ np.asarray(M["mlp.2.weight"], dtype=dt).T + np.asarray(M["mlp.2.bias"], dtype=dt)


# ----------------------------------------------------------------------------------------------
# the tower
# ----------------------------------------------------------------------------------------------

def vision_forward(W, cfg, pixels_list, grids, dt=np.float32, want_blocks=False):
    """Exactly the model's call visual(cat(pixels_list), grid_thw=grids).
    Returns dict with merged [sum n/U, out] (returned order), and if want_blocks the patch embedding
    and every block output un-permuted back to ORIGINAL patch order, plus window_index, rotary_pos."""
    m = cfg["spatial_merge_size"]
    U = m * m
    E = cfg["hidden_size"]
    hd = E // cfg["num_heads"]
    C, T, P = cfg["in_channels"], cfg["temporal_patch_size"], cfg["patch_size"]
    for (gt, gh, gw), px in zip(grids, pixels_list):
        if gh % m or gw % m:
            raise ValueError("grid %s not divisible by spatial_merge_size %d" % ((gt, gh, gw), m))
        if px.shape != (gt * gh * gw, C * T * P * P):
            raise ValueError("pixel_values shape %s does not match grid %s (want %s)"
                             % (px.shape, (gt, gh, gw), (gt * gh * gw, C * T * P * P)))
    pixels = np.concatenate([np.asarray(p) for p in pixels_list], axis=0).astype(dt)
    n = pixels.shape[0]

    # patch embed: Conv3d(kernel = stride = (T, P, P), no bias) == flat row @ W.reshape(E, -1).T
    x = pixels @ np.asarray(W["patch_embed"], dtype=dt).T
    res = {}
    if want_blocks:
        res["patch_embed"] = x.copy()

    pos = np.concatenate([rot_pos_ids(gt, gh, gw, m) for (gt, gh, gw) in grids], axis=0)
    widx, cu_win = window_index(grids, m, cfg["window_size"], P)
    cu_win = unique_consecutive(cu_win)
    cu_full = full_cu_seqlens(grids)
    res["window_index"] = widx
    res["rotary_pos"] = pos
    res["cu_window_seqlens"] = np.array(cu_win, dtype=np.int64)
    res["cu_seqlens"] = np.array(cu_full, dtype=np.int64)

    x = x.reshape(n // U, U, E)[widx].reshape(n, E)
    pos_w = pos.reshape(n // U, U, 2)[widx].reshape(n, 2)
    cos, sin = rotary_cos_sin(pos_w, hd, dt)
    rev = np.argsort(widx, kind="stable")

    blocks = []
    full = set(cfg["fullatt_block_indexes"])
    for b, blk in enumerate(W["blocks"]):
        cu = cu_full if b in full else cu_win
        x = vision_block(x, blk, cos, sin, cu, cfg, dt)
        if want_blocks:
            blocks.append(x.reshape(n // U, U, E)[rev].reshape(n, E).copy())
    res["blocks"] = blocks
    y = merger(x, W["merger"], cfg, dt)
    res["merged"] = y[rev]
    return res


def split_per_image(res, grids, m):
    """Split a batched result into per-image dicts (window_index rebased to 0 per image)."""
    U = m * m
    out = []
    a = 0
    for (gt, gh, gw) in grids:
        n = gt * gh * gw
        b = a + n
        d = {"merged": res["merged"][a // U:b // U], "rotary_pos": res["rotary_pos"][a:b]}
        if "patch_embed" in res:
            d["patch_embed"] = res["patch_embed"][a:b]
        d["blocks"] = [x[a:b] for x in res["blocks"]]
        out.append(d)
        a = b
    # window_index: the batched one is a concatenation of per-image blocks with offsets
    widx = res["window_index"]
    a = 0
    for d, (gt, gh, gw) in zip(out, grids):
        k = gt * gh * gw // U
        d["window_index"] = widx[a:a + k] - (a)
        a += k
    return out


# ----------------------------------------------------------------------------------------------
# pixels input
# ----------------------------------------------------------------------------------------------

def load_pixels(path):
    st = SafeTensorsFile(path)
    names = set(st.keys())
    imgs = []
    i = 0
    while "image.%d.pixel_values" % i in names:
        px = st.get_f32("image.%d.pixel_values" % i)
        g = st.get("image.%d.grid_thw" % i).reshape(-1)
        if g.size != 3:
            raise ValueError("image.%d.grid_thw must have 3 entries" % i)
        imgs.append((px, tuple(int(v) for v in g)))
        i += 1
    if not imgs:
        raise ValueError("%s: no image.0.pixel_values" % path)
    return imgs


# ----------------------------------------------------------------------------------------------
# tiny random model / pixels
# ----------------------------------------------------------------------------------------------

TINY = dict(depth=4, hidden_size=64, intermediate_size=96, num_heads=4, out_hidden_size=48,
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
            fullatt_block_indexes=[1, 3], in_chans=3, hidden_act="silu")


def make_model(out_dir, seed, overrides=None, dtype="BF16", prefix="visual.", shards=1):
    vc = dict(TINY)
    if overrides:
        vc.update(overrides)
    rng = np.random.default_rng(seed)
    E, I, O = vc["hidden_size"], vc["intermediate_size"], vc["out_hidden_size"]
    C, T, P, m = vc.get("in_chans", 3), vc["temporal_patch_size"], vc["patch_size"], vc["spatial_merge_size"]
    H = E * m * m

    def normal(shape, std):
        # std is tuned for the tiny shapes (hidden 64, intermediate 96, merger 256); larger
        # towers scale it by sqrt(tiny_fan_in / fan_in) so activations stay O(1).
        if len(shape) == 2:
            tiny_fan = {E: 64, I: 96, H: 256}.get(shape[1], shape[1])
            std = std * math.sqrt(tiny_fan / shape[1])
        return (rng.standard_normal(shape) * std).astype(np.float32)

    t = {}
    t["patch_embed.proj.weight"] = normal((E, C, T, P, P), 0.02)
    for b in range(vc["depth"]):
        p = "blocks.%d." % b
        t[p + "norm1.weight"] = (1.0 + normal((E,), 0.25)).astype(np.float32)
        t[p + "norm2.weight"] = (1.0 + normal((E,), 0.25)).astype(np.float32)
        # qkv larger than 0.02 so that the softmax is far from uniform and positions matter
        t[p + "attn.qkv.weight"] = normal((3 * E, E), 0.12)
        t[p + "attn.qkv.bias"] = normal((3 * E,), 0.1)
        t[p + "attn.proj.weight"] = normal((E, E), 0.06)
        t[p + "attn.proj.bias"] = normal((E,), 0.05)
        t[p + "mlp.gate_proj.weight"] = normal((I, E), 0.08)
        t[p + "mlp.gate_proj.bias"] = normal((I,), 0.1)
        t[p + "mlp.up_proj.weight"] = normal((I, E), 0.08)
        t[p + "mlp.up_proj.bias"] = normal((I,), 0.1)
        t[p + "mlp.down_proj.weight"] = normal((E, I), 0.06)
        t[p + "mlp.down_proj.bias"] = normal((E,), 0.05)
    t["merger.ln_q.weight"] = (1.0 + normal((E,), 0.25)).astype(np.float32)
    t["merger.mlp.0.weight"] = normal((H, H), 0.04)
    t["merger.mlp.0.bias"] = normal((H,), 0.1)
    t["merger.mlp.2.weight"] = normal((O, H), 0.04)
    t["merger.mlp.2.bias"] = normal((O,), 0.05)

    os.makedirs(out_dir, exist_ok=True)
    cfg = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
           "vision_config": vc}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)

    def enc(a):
        if dtype == "BF16":
            return ("BF16", f32_to_bf16_bits(a))
        if dtype == "F16":
            return ("F16", a.astype(np.float16))
        return ("F32", a)

    if dtype != "BF16":
        # keep the numbers identical to the BF16 model of the same seed
        t = {k: bf16_bits_to_f32(f32_to_bf16_bits(v)).reshape(v.shape) for k, v in t.items()}
    names = list(t.keys())
    if shards <= 1:
        write_safetensors(os.path.join(out_dir, "model.safetensors"),
                          {prefix + k: enc(t[k]) for k in names}, {"format": "pt"})
    else:
        wm = {}
        per = (len(names) + shards - 1) // shards
        for s in range(shards):
            fn = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
            part = names[s * per:(s + 1) * per]
            write_safetensors(os.path.join(out_dir, fn), {prefix + k: enc(t[k]) for k in part},
                              {"format": "pt"})
            for k in part:
                wm[prefix + k] = fn
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": wm}, f, indent=2)
    return cfg


def parse_grids(s):
    grids = []
    for part in s.split(";"):
        part = part.strip()
        if not part:
            continue
        v = [int(x) for x in part.split(",")]
        if len(v) != 3 or min(v) <= 0:
            raise ValueError("bad grid %r" % part)
        grids.append(tuple(v))
    return grids


def make_pixels(path, grids, seed, C=3, T=2, P=14, still=False):
    rng = np.random.default_rng(seed)
    tensors = {}
    for i, (gt, gh, gw) in enumerate(grids):
        n = gt * gh * gw
        if still:
            a = rng.uniform(-1.79, 2.15, size=(n, C, 1, P, P)).astype(np.float32)
            a = np.repeat(a, T, axis=2)
        else:
            a = rng.uniform(-1.79, 2.15, size=(n, C, T, P, P)).astype(np.float32)
        tensors["image.%d.pixel_values" % i] = ("F32", a.reshape(n, C * T * P * P))
        tensors["image.%d.grid_thw" % i] = ("I64", np.array([gt, gh, gw], dtype=np.int64))
    write_safetensors(path, tensors, {"source": "ref_vision.py --make-pixels seed=%d" % seed})


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def run(model_dir, pixels_path, out_path, blocks=False, batch=False, dt=np.float32):
    cfg = load_vision_config(model_dir)
    W = load_vision_weights(model_dir, cfg)
    imgs = load_pixels(pixels_path)
    m = cfg["spatial_merge_size"]
    if batch:
        res = vision_forward(W, cfg, [p for p, _ in imgs], [g for _, g in imgs], dt, blocks)
        per = split_per_image(res, [g for _, g in imgs], m)
    else:
        per = []
        for px, g in imgs:
            per.append(vision_forward(W, cfg, [px], [g], dt, blocks))
    tensors = {}
    for i, d in enumerate(per):
        tensors["image.%d.merged" % i] = ("F32", d["merged"].astype(np.float32))
        tensors["image.%d.window_index" % i] = ("I64", d["window_index"])
        tensors["image.%d.rotary_pos" % i] = ("I64", d["rotary_pos"])
        if blocks:
            tensors["image.%d.patch_embed" % i] = ("F32", d["patch_embed"].astype(np.float32))
            for b, x in enumerate(d["blocks"]):
                tensors["image.%d.block.%d" % (i, b)] = ("F32", x.astype(np.float32))
    meta = {"source": SOURCE, "compute": "float64" if dt == np.float64 else "float32",
            "mode": "batch" if batch else "per-image", "weights_prefix": W["prefix"],
            "vision_config": json.dumps(cfg, sort_keys=True)}
    write_safetensors(out_path, tensors, meta)


def main(argv):
    args = list(argv)

    def opt(name, default=None, flag=False):
        if name in args:
            i = args.index(name)
            if flag:
                args.pop(i)
                return True
            if i + 1 >= len(args):
                raise SystemExit("%s needs a value" % name)
            v = args[i + 1]
            del args[i:i + 2]
            return v
        return False if flag else default

    try:
        mm = opt("--make-model")
        mp = opt("--make-pixels")
        seed = int(opt("--seed", "0"))
        if mm:
            over = {}
            ws = opt("--window-size")
            if ws:
                over["window_size"] = int(ws)
            fa = opt("--fullatt")
            if fa is not False and fa is not None:
                over["fullatt_block_indexes"] = [int(v) for v in fa.split(",") if v.strip()]
            dp = opt("--depth")
            if dp:
                over["depth"] = int(dp)
            while "--set" in args:          # --set key=value (JSON value), e.g. --set hidden_size=1280
                kv = opt("--set")
                k, v = kv.split("=", 1)
                over[k] = json.loads(v)
            wdt = opt("--dtype", "BF16").upper()
            prefix = opt("--prefix", "visual.")
            shards = int(opt("--shards", "1"))
            make_model(mm, seed, over, wdt, prefix, shards)
            return 0
        if mp:
            grids = parse_grids(opt("--grids", "1,4,6;1,8,8"))
            still = opt("--still", flag=True)
            make_pixels(mp, grids, seed, still=still)
            return 0
        blocks = opt("--blocks", flag=True)
        batch = opt("--batch", flag=True)
        f64 = opt("--f64", flag=True)
        if len(args) != 3:
            sys.stderr.write(__doc__)
            return 2
        run(args[0], args[1], args[2], blocks, batch, np.float64 if f64 else np.float32)
        return 0
    except (ValueError, OSError, KeyError) as e:
        sys.stderr.write("ref_vision.py: error: %s\n" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
