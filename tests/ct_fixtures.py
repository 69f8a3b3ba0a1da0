#!/usr/bin/python3
"""ct_fixtures.py OUTDIR: write a tiny fake checkpoint and compressed-tensors
exports of it, good and broken, to test ct_check.py without masq.

OUTDIR/orig is the "original": BF16, 2 decoder layers under model.layers.,
hidden 64, intermediate 128, 4 heads (2 KV heads, head_dim 16), biases on
q/k/v, and a small vision tower under model.visual.  Every other directory is
an export of it; one line per export is printed:

    <OUTDIR>/<name> pass|fail <what>

meaning `ct_check.py OUTDIR/orig OUTDIR/<name>` must exit 0 (pass) or 1 (fail).

The exports are made here independently of ct_check.py: their own safetensors
writer (tensors sorted by element size then name, header padded to 8 bytes,
as the official writer does), their own MASQuant reference quantizer (per
group loops, float32), and a numpy transcription of compressed-tensors'
pack_to_int32 (compressors/pack_quantized: value + 2^(bits-1) as unsigned,
padded with zeros to a whole number of words, value j of each run of 32/bits
shifted left by j*bits and summed into an int32; zero points packed the same
way along dim 0, the output dimension).  Deterministic (fixed seeds).
"""
import json
import math
import os
import sys

import numpy as np

ITEM = {"BF16": 2, "F16": 2, "F32": 4, "I8": 1, "I32": 4, "I64": 8}
H, I, NH, NKV, HD, V, L, VH = 64, 128, 4, 2, 16, 96, 2, 30
PRE = "model.layers."
LINS = {"self_attn.q_proj": (NH * HD, H), "self_attn.k_proj": (NKV * HD, H),
        "self_attn.v_proj": (NKV * HD, H), "self_attn.o_proj": (H, NH * HD),
        "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H), "mlp.down_proj": (H, I)}
NORM_OF = {"self_attn.q_proj": "input_layernorm", "self_attn.k_proj": "input_layernorm",
           "self_attn.v_proj": "input_layernorm", "mlp.gate_proj": "post_attention_layernorm",
           "mlp.up_proj": "post_attention_layernorm"}
CT_VERSION = "0.18.0"


# ---------------------------------------------------------------- bf16, files
def bf16(x):
    """float32 -> BF16 bits, round to nearest even."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_trunc(x):
    return (np.asarray(x, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def f32(bits):
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def T(dtype, arr):
    """(dtype, shape, raw bytes) of a numpy array already in that dtype's representation."""
    arr = np.ascontiguousarray(arr)
    return (dtype, list(arr.shape), arr.astype(arr.dtype.newbyteorder("<")).tobytes())


def write_st(path, tensors, first=()):
    """The official order (by element size, largest first, then name), but the
    names in `first` are written first (to break the alignment on purpose)."""
    rest = sorted((n for n in tensors if n not in first), key=lambda n: (-ITEM[tensors[n][0]], n))
    head, off, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for n in list(first) + rest:
        dt, shape, raw = tensors[n]
        head[n] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(head, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def write_model(d, tensors, config, shards=1, first=()):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    if shards == 1:
        write_st(os.path.join(d, "model.safetensors"), tensors, first)
        return
    names = sorted(tensors)
    per = math.ceil(len(names) / shards)
    wm = {}
    for k in range(shards):
        fn = "model-%05d-of-%05d.safetensors" % (k + 1, shards)
        part = {n: tensors[n] for n in names[k * per:(k + 1) * per]}
        write_st(os.path.join(d, fn), part)
        wm.update({n: fn for n in part})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(len(t[2]) for t in tensors.values())}, "weight_map": wm}, f,
                  indent=2, sort_keys=True)


# ---------------------------------------------------------------- the original
def make_original():
    rng = np.random.default_rng(20260305)
    t = {}

    def put(name, arr):
        t[name] = T("BF16", bf16(np.asarray(arr, dtype=np.float32)))

    put("model.embed_tokens.weight", rng.normal(0, 0.02, (V, H)))
    put("lm_head.weight", rng.normal(0, 0.02, (V, H)))
    put("model.norm.weight", 1 + 0.1 * rng.normal(size=H))
    for layer in range(L):
        p = f"{PRE}{layer}."
        for nm in ("input_layernorm", "post_attention_layernorm"):
            v = 1 + 0.3 * rng.normal(size=H)
            put(p + nm + ".weight", np.where(np.abs(v) < 0.05, 0.05, v))
        for lin, (o, i) in LINS.items():
            col = np.exp(rng.normal(0, 0.5, size=i))          # a few heavy input channels
            put(p + lin + ".weight", rng.normal(0, 0.05, (o, i)) * col[None, :])
        for lin in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            put(p + lin + ".bias", rng.normal(0, 0.01, LINS[lin][0]))
    v = "model.visual."
    put(v + "blocks.0.norm1.weight", 1 + 0.1 * rng.normal(size=VH))
    put(v + "blocks.0.attn.qkv.weight", rng.normal(0, 0.05, (3 * VH, VH)))
    put(v + "blocks.0.attn.qkv.bias", rng.normal(0, 0.01, 3 * VH))
    put(v + "blocks.0.attn.proj.weight", rng.normal(0, 0.05, (VH, VH)))
    put(v + "merger.mlp.0.weight", rng.normal(0, 0.05, (H, VH)))
    put(v + "merger.mlp.0.bias", rng.normal(0, 0.01, H))
    config = {"architectures": ["FakeVLForConditionalGeneration"], "model_type": "fake_vl",
              "hidden_size": H, "intermediate_size": I, "num_attention_heads": NH,
              "num_key_value_heads": NKV, "head_dim": HD, "num_hidden_layers": L, "vocab_size": V,
              "rms_norm_eps": 1e-6, "torch_dtype": "bfloat16", "tie_word_embeddings": False,
              "vision_config": {"hidden_size": VH, "depth": 1, "out_hidden_size": H}}
    return t, config


def value(t):
    dt, shape, raw = t
    assert dt == "BF16"
    return f32(np.frombuffer(raw, dtype="<u2")).reshape(shape)


# ---------------------------------------------------------------- smoothing
def smoothed_norms(orig, seed=7):
    """New norms (BF16 bits) = orig / s for a random positive s per column; the
    factor the linears carry is then exactly f32(orig) / f32(new)."""
    rng = np.random.default_rng(seed)
    new, fac = {}, {}
    for layer in range(L):
        for nm in ("input_layernorm", "post_attention_layernorm"):
            n = f"{PRE}{layer}.{nm}.weight"
            o = value(orig[n])
            s = np.exp(rng.normal(0, 0.4, size=H)).astype(np.float32)
            nb = bf16(o / s)
            new[n] = T("BF16", nb)
            fac[n] = (o / f32(nb)).astype(np.float32)
    return new, fac


def smoothed_weight(orig, fac, layer, lin):
    W = value(orig[f"{PRE}{layer}.{lin}.weight"])
    if lin in NORM_OF:
        W = (W * fac[f"{PRE}{layer}.{NORM_OF[lin]}.weight"][None, :]).astype(np.float32)
    return W


# ---------------------------------------------------------------- the quantizer
def masquant_quantize(X, bits, symmetric, g):
    """MASQuant's reference quantizer, one group at a time, float32 throughout.
    Returns (scale [out, G] f32, zero [out, G] int or None, level [out, in] int)."""
    out, inn = X.shape
    G = inn // g
    scale = np.zeros((out, G), np.float32)
    zero = None if symmetric else np.zeros((out, G), np.int64)
    level = np.zeros((out, inn), np.int64)
    lo, hi = np.float32(1e-5), np.float32(1e4)
    for r in range(out):
        for j in range(G):
            x = X[r, j * g:(j + 1) * g]
            if symmetric:
                qmax = np.float32(2 ** (bits - 1) - 1)
                sc = min(max(np.float32(np.abs(x).max()) / qmax, lo), hi)
                q = np.minimum(np.maximum(np.rint(x / sc), -qmax), qmax)
            else:
                top = np.float32(2 ** bits - 1)
                sc = min(max((np.float32(x.max()) - np.float32(x.min())) / top, lo), hi)
                z = min(max(np.rint(-np.float32(x.min()) / sc), np.float32(-1e4)), np.float32(1e4))
                q = np.minimum(np.maximum(np.rint(x / sc) + z, np.float32(0)), top)
                zero[r, j] = int(z)
            scale[r, j] = sc
            level[r, j * g:(j + 1) * g] = q.astype(np.int64)
    return scale, zero, level


def pack_to_int32(values, bits, packed_dim=1, lsb_first=True, offset=True):
    """compressed-tensors' pack_to_int32 for bits dividing 32: add 2^(bits-1)
    (the signed int8 values become unsigned), pad along packed_dim with zeros
    to a multiple of 32/bits, and put value j of each group of 32/bits into
    bits [j*bits, (j+1)*bits) of one int32.  lsb_first=False / offset=False
    make the broken variants."""
    pf = 32 // bits
    v = np.asarray(values, dtype=np.int64)
    if offset:
        v = v + (1 << (bits - 1))
    v = v & ((1 << bits) - 1)
    if packed_dim == 0:
        v = v.T
    rows, cols = v.shape
    padded = math.ceil(cols / pf) * pf
    v = np.concatenate([v, np.zeros((rows, padded - cols), np.int64)], axis=1)
    r = v.reshape(rows, padded // pf, pf).astype(np.uint64)
    j = np.arange(pf, dtype=np.uint64) if lsb_first else np.arange(pf - 1, -1, -1, dtype=np.uint64)
    packed = ((r << (j * np.uint64(bits))).sum(axis=2) & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32)
    if packed_dim == 0:
        packed = packed.T
    return np.ascontiguousarray(packed)


# ---------------------------------------------------------------- exports
def ct_weights_args(bits, sym, strategy, group):
    return {"actorder": None, "block_structure": None, "dynamic": False, "group_size": group,
            "num_bits": bits, "observer": "memoryless_minmax", "observer_kwargs": {}, "scale_dtype": None,
            "strategy": strategy, "symmetric": sym, "type": "int", "zp_dtype": None if sym else "torch.int8"}


def pack_export(orig, ocfg, bits, sym, strategy, group, lsb_first=True, offset=True, bump_scale=False,
                trunc_scale=False, zp_dim=0, keep_weight=False, fold=True, shape_dtype="I64",
                level_off=False, exact_ignore=False, zero_norm=False):
    new_norms, fac = smoothed_norms(orig)
    t = {n: v for n, v in orig.items()}
    if fold:
        t.update(new_norms)
    if zero_norm:
        # one exported norm value 0: that column's factor is unknown to a checker, the linears are
        # quantized from something else there (here: the column scaled by 3)
        n = f"{PRE}1.input_layernorm.weight"
        nb = np.frombuffer(t[n][2], dtype="<u2").copy()
        nb[5] = 0
        t[n] = T("BF16", nb)
        fac = dict(fac)
        fac[n] = fac[n].copy()
        fac[n][5] *= np.float32(3)
    for layer in range(L):
        for lin, (o, i) in LINS.items():
            P = f"{PRE}{layer}.{lin}"
            X = smoothed_weight(orig, fac, layer, lin)
            g = i if strategy == "channel" else group
            scale, zero, level = masquant_quantize(X, bits, sym, g)
            off = 1 << (bits - 1)
            vals = level if sym else level - off                 # compressed-tensors' signed values
            if level_off and layer == 0 and lin == "self_attn.q_proj":
                vals = vals.copy()
                lo_, hi_ = (-(off - 1), off - 1) if sym else (-off, off - 1)
                vals[3, 5] = vals[3, 5] + 1 if vals[3, 5] < hi_ else vals[3, 5] - 1
            t[P + ".weight_packed"] = T("I32", pack_to_int32(vals, bits, 1, lsb_first, offset))
            sb = bf16_trunc(scale) if trunc_scale else bf16(scale)
            if bump_scale and layer == 1 and lin == "mlp.up_proj":
                sb = sb.copy()
                sb[7, 0] += 1
            t[P + ".weight_scale"] = T("BF16", sb)
            t[P + ".weight_shape"] = T(shape_dtype, np.array([o, i], dtype=np.int64 if shape_dtype == "I64"
                                                              else np.int32))
            if not sym:
                t[P + ".weight_zero_point"] = T("I32", pack_to_int32(zero - off, bits, zp_dim))
            if not keep_weight:
                del t[P + ".weight"]
    vis = ["lm_head", "re:.*visual.*"] if not exact_ignore else \
        ["lm_head"] + sorted(n[:-len(".weight")] for n in orig if n.startswith("model.visual.")
                             and n.endswith(".weight") and len(orig[n][1]) == 2)
    qc = {"config_groups": {"group_0": {"format": "pack-quantized", "input_activations": None,
                                        "output_activations": None, "targets": ["Linear"],
                                        "weights": ct_weights_args(bits, sym, strategy,
                                                                   None if strategy == "channel" else group)}},
          "format": "pack-quantized", "global_compression_ratio": None, "ignore": vis, "kv_cache_scheme": None,
          "quant_method": "compressed-tensors", "quantization_status": "compressed", "sparsity_config": {},
          "transform_config": {}, "version": CT_VERSION}
    cfg = dict(ocfg)
    cfg["quantization_config"] = qc
    return t, cfg


def int8_export(orig, ocfg):
    new_norms, fac = smoothed_norms(orig)
    t = {n: v for n, v in orig.items()}
    t.update(new_norms)
    for layer in range(L):
        for lin in LINS:
            P = f"{PRE}{layer}.{lin}"
            X = smoothed_weight(orig, fac, layer, lin)
            scale, _, level = masquant_quantize(X, 8, True, X.shape[1])
            t[P + ".weight"] = T("I8", level.astype(np.int8))
            t[P + ".weight_scale"] = T("F32", scale.astype(np.float32))
    qc = {"quant_method": "compressed-tensors", "format": "int-quantized", "quantization_status": "compressed",
          "version": CT_VERSION, "global_compression_ratio": None, "kv_cache_scheme": None,
          "ignore": ["lm_head", "re:.*visual.*"],
          "config_groups": {"group_0": {
              "targets": ["Linear"],
              "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel",
                          "group_size": None, "dynamic": False, "actorder": None, "block_structure": None,
                          "observer": "minmax", "observer_kwargs": {}},
              "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token",
                                    "dynamic": True, "group_size": None, "observer": None},
              "output_activations": None}}}
    cfg = dict(ocfg)
    cfg["quantization_config"] = qc
    return t, cfg


def cases(orig, ocfg):
    """(name, verdict, what, tensors, config, write options)"""
    out = []

    def add(name, verdict, what, tc, **opt):
        out.append((name, verdict, what, tc[0], tc[1], opt))

    add("w4a16-g32-asym", "pass", "W4A16 group 32 asymmetric", pack_export(orig, ocfg, 4, False, "group", 32))
    add("w4a16-channel-sym", "pass", "W4A16 channel symmetric, ignore by exact names",
        pack_export(orig, ocfg, 4, True, "channel", None, exact_ignore=True))
    add("w8a16-channel-sym", "pass", "W8A16 channel symmetric", pack_export(orig, ocfg, 8, True, "channel", None))
    add("w4a16-g64-sym", "pass", "W4A16 group 64 symmetric", pack_export(orig, ocfg, 4, True, "group", 64))
    add("w4a16-g32-asym-sharded", "pass", "W4A16 group 32 asymmetric in 3 shards with an index",
        pack_export(orig, ocfg, 4, False, "group", 32), shards=3)
    add("w4a16-g32-asym-zero-norm", "pass", "W4A16 group 32 asymmetric, one exported norm value 0 "
        "(its groups excluded)", pack_export(orig, ocfg, 4, False, "group", 32, zero_norm=True))
    add("w4a16-channel-sym-zero-norm", "pass", "W4A16 channel symmetric, one exported norm value 0 "
        "(its rows excluded)", pack_export(orig, ocfg, 4, True, "channel", None, zero_norm=True))
    add("w8a8-int", "pass", "int-quantized W8A8 (channel weights, dynamic per-token activations)",
        int8_export(orig, ocfg))

    add("bad-nibble-order", "fail", "(a) values packed most significant nibble first",
        pack_export(orig, ocfg, 4, False, "group", 32, lsb_first=False))
    add("bad-no-offset", "fail", "(b) signed levels packed without the +8 offset",
        pack_export(orig, ocfg, 4, True, "channel", None, offset=False))
    add("bad-scale-ulp", "fail", "(c) one weight_scale one BF16 ulp up",
        pack_export(orig, ocfg, 4, False, "group", 32, bump_scale=True))
    t, c = pack_export(orig, ocfg, 4, False, "group", 32)
    c["quantization_config"]["config_groups"]["group_0"]["input_activations"] = {
        "num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True,
        "group_size": None, "observer": None}
    add("bad-pack-input-activations", "fail", "(d) pack-quantized with int8 per-token input_activations", (t, c))
    t, c = int8_export(orig, ocfg)
    c["quantization_config"]["config_groups"]["group_0"]["input_activations"] = None
    add("bad-int-no-input-activations", "fail", "(e) int-quantized with input_activations null (vLLM asserts "
        "float weights)", (t, c))
    add("bad-misaligned", "fail", "a 60-byte tensor first: the I64 weight_shape lands at offset 60",
        pack_export(orig, ocfg, 4, True, "channel", None), first=("model.visual.blocks.0.norm1.weight",))
    add("bad-zp-along-in", "fail", "zero points packed along the input dimension",
        pack_export(orig, ocfg, 4, False, "group", 32, zp_dim=1))
    add("bad-float-weight-left", "fail", "P.weight kept beside weight_packed",
        pack_export(orig, ocfg, 4, False, "group", 32, keep_weight=True))
    add("bad-norm-not-folded", "fail", "the norms keep their original values",
        pack_export(orig, ocfg, 4, False, "group", 32, fold=False))
    add("bad-group-16", "fail", "group_size 16 (not a Marlin group size)",
        pack_export(orig, ocfg, 4, False, "group", 16))
    add("bad-w8a16-asym", "fail", "W8A16 with zero points (no CUDA kernel but Hopper's Machete)",
        pack_export(orig, ocfg, 8, False, "group", 32))
    t, c = pack_export(orig, ocfg, 4, False, "group", 32)
    c["quantization_config"]["ignore"] = ["lm_head"]
    add("bad-ignore-lacks-vision", "fail", "ignore without the vision tower", (t, c))
    t, c = pack_export(orig, ocfg, 4, False, "group", 32)
    c["quantization_config"]["config_groups"]["group_0"]["weights"]["foo"] = 1
    add("bad-unknown-field", "fail", "a field QuantizationArgs forbids", (t, c))
    add("bad-weight-shape-i32", "fail", "weight_shape stored as I32",
        pack_export(orig, ocfg, 4, True, "channel", None, shape_dtype="I32"))
    add("bad-one-level-off", "fail", "one level one step off",
        pack_export(orig, ocfg, 4, False, "group", 32, level_off=True))
    add("bad-scale-truncated", "fail", "scales truncated to BF16, not rounded to nearest even",
        pack_export(orig, ocfg, 4, False, "group", 32, trunc_scale=True))
    t, c = pack_export(orig, ocfg, 4, True, "channel", None)
    c["quantization_config"]["config_groups"]["group_0"]["format"] = "int-quantized"
    add("bad-group-format-int", "fail", "the group's own format int-quantized (vLLM reads it before the "
        "top-level one)", (t, c))
    t, c = pack_export(orig, ocfg, 4, False, "group", 32)
    c["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] = None
    add("bad-group-no-size", "fail", "strategy group with group_size null", (t, c))
    return out


def main():
    if len(sys.argv) != 2:
        print("usage: ct_fixtures.py OUTDIR", file=sys.stderr)
        return 2
    outdir = sys.argv[1]
    orig, ocfg = make_original()
    write_model(os.path.join(outdir, "orig"), orig, ocfg)
    for name, verdict, what, t, c, opt in cases(orig, ocfg):
        d = os.path.join(outdir, name)
        write_model(d, t, c, shards=opt.get("shards", 1), first=opt.get("first", ()))
        print(f"{d} {verdict} {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
