#!/usr/bin/python3
"""vision_torch.py: the baseline of bench/vision.sh, in PyTorch (Debian's
python3-torch), and the inputs both sides read.

  vision_torch.py make DIR [--depth 32 --hidden 1280 --inter 3420 --heads 16
                            --out 2048 --seed N]
      a random Qwen2.5-VL-shaped vision tower (3B's shapes by default):
      DIR/config.json and DIR/model.safetensors (BF16, "visual.*")
  vision_torch.py pixels OUT --grids "1,48,48;..." [--seed N]
      random pixel_values and grid_thw per image
  vision_torch.py time DIR PIXELS [--threads N] [--dtype float32|bfloat16]
      the tower in PyTorch (the same computation as transformers'
      Qwen2_5_VisionTransformerPretrainedModel, written out here: the
      patch embedding as a matmul, RMSNorm blocks with 2-D rotary attention
      in windows and over the whole image, the SwiGLU MLP, the 2x2 merger),
      weights preloaded, and prints "torch: images=N seconds=S
      images_per_s=R" (the best of --repeat runs)
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np


def st_write(path, tensors, meta=None):
    hdr, off, blobs = {}, 0, []
    for name, a in tensors:
        dt = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.uint16): "BF16"}[a.dtype]
        b = np.ascontiguousarray(a).tobytes()
        hdr[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    if meta:
        hdr["__metadata__"] = meta
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def st_read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        raw = b[8 + n + s:8 + n + e]
        if v["dtype"] == "BF16":
            a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, {"F32": np.float32, "I64": np.int64}[v["dtype"]])
        out[k] = a.reshape(v["shape"])
    return out


def to_bf16(a):
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def make(a):
    r = np.random.default_rng(a.seed)
    d, i, o, m = a.hidden, a.inter, a.out, 2
    full = [b for b in range(a.depth) if (b + 1) % 8 == 0] or [a.depth - 1]
    cfg = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
           "vision_config": {"depth": a.depth, "hidden_size": d, "intermediate_size": i, "num_heads": a.heads,
                             "out_hidden_size": o, "in_chans": 3, "patch_size": 14, "spatial_merge_size": m,
                             "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": full,
                             "hidden_act": "silu"}}
    os.makedirs(a.dir, exist_ok=True)
    json.dump(cfg, open(os.path.join(a.dir, "config.json"), "w"), indent=2)
    t = []

    def w(name, *shape, std=None, base=0.0):
        s = std if std is not None else 1.0 / math.sqrt(shape[-1] if len(shape) > 1 else 1)
        t.append((name, to_bf16(base + s * r.standard_normal(shape, dtype=np.float32))))
    w("visual.patch_embed.proj.weight", d, 3, 2, 14, 14, std=1 / math.sqrt(3 * 2 * 14 * 14))
    for b in range(a.depth):
        p = f"visual.blocks.{b}."
        w(p + "norm1.weight", d, std=0.1, base=1.0)
        w(p + "attn.qkv.weight", 3 * d, d)
        w(p + "attn.qkv.bias", 3 * d, std=0.02)
        w(p + "attn.proj.weight", d, d)
        w(p + "attn.proj.bias", d, std=0.02)
        w(p + "norm2.weight", d, std=0.1, base=1.0)
        w(p + "mlp.gate_proj.weight", i, d)
        w(p + "mlp.gate_proj.bias", i, std=0.02)
        w(p + "mlp.up_proj.weight", i, d)
        w(p + "mlp.up_proj.bias", i, std=0.02)
        w(p + "mlp.down_proj.weight", d, i)
        w(p + "mlp.down_proj.bias", d, std=0.02)
    w("visual.merger.ln_q.weight", d, std=0.1, base=1.0)
    w("visual.merger.mlp.0.weight", d * m * m, d * m * m)
    w("visual.merger.mlp.0.bias", d * m * m, std=0.02)
    w("visual.merger.mlp.2.weight", o, d * m * m)
    w("visual.merger.mlp.2.bias", o, std=0.02)
    st_write(os.path.join(a.dir, "model.safetensors"), t, {"format": "pt"})


def pixels(a):
    r = np.random.default_rng(a.seed)
    t = []
    for k, g in enumerate(a.grids.split(";")):
        g = [int(x) for x in g.split(",")]
        t.append((f"image.{k}.pixel_values", r.standard_normal((g[0] * g[1] * g[2], 3 * 2 * 14 * 14), dtype=np.float32)))
        t.append((f"image.{k}.grid_thw", np.array(g, np.int64)))
    st_write(a.out, t)


def tower(torch, W, cfg, px, grid, dt):
    F = torch.nn.functional
    d, heads, m = cfg["hidden_size"], cfg["num_heads"], cfg["spatial_merge_size"]
    hd = d // heads
    ws = cfg["window_size"] // m // cfg["patch_size"]
    t, gh, gw = grid
    lh, lw = gh // m, gw // m
    # window order of the merge units, and the windows' patch counts
    order, cu = [], [0]
    nwh, nww = (lh + ws - lh % ws) // ws, (lw + ws - lw % ws) // ws
    for f in range(t):
        for wh in range(nwh):
            for ww in range(nww):
                c = 0
                for y in range(wh * ws, min(wh * ws + ws, lh)):
                    for x in range(ww * ws, min(ww * ws + ws, lw)):
                        order.append((f * lh + y) * lw + x)
                        c += 1
                if c:
                    cu.append(cu[-1] + c * m * m)
    order = torch.tensor(order)
    n = t * gh * gw
    # rotary: row and column of each patch, processor order
    u = torch.arange(n) // (m * m)
    rr = torch.arange(n) % (m * m)
    py = (u % (lh * lw)) // lw * m + rr // m
    pxx = (u % (lh * lw)) % lw * m + rr % m
    inv = 1.0 / (10000 ** (torch.arange(0, hd // 2, 2, dtype=torch.float) / (hd // 2)))
    rpe = torch.cat([py[:, None].float() * inv, pxx[:, None].float() * inv], 1)
    emb = torch.cat([rpe, rpe], 1)
    idx = (order[:, None] * m * m + torch.arange(m * m)).reshape(-1)
    cos, sin = emb[idx].cos(), emb[idx].sin()
    h = px.to(dt) @ W["visual.patch_embed.proj.weight"].reshape(d, -1).t()
    h = h[idx]

    def rms(x, w):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)).to(dt) * w

    def rot(x):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return torch.cat([-x2, x1], -1)
    full_cu = [0, n]
    for b in range(cfg["depth"]):
        p = f"visual.blocks.{b}."
        x = rms(h, W[p + "norm1.weight"])
        qkv = F.linear(x, W[p + "attn.qkv.weight"], W[p + "attn.qkv.bias"]).reshape(n, 3, heads, hd)
        q, k, v = qkv[:, 0].float(), qkv[:, 1].float(), qkv[:, 2]
        q = (q * cos[:, None] + rot(q) * sin[:, None]).to(dt)
        k = (k * cos[:, None] + rot(k) * sin[:, None]).to(dt)
        segs = full_cu if b in cfg["fullatt_block_indexes"] else cu
        o = torch.empty(n, heads, hd, dtype=dt)
        for s0, s1 in zip(segs[:-1], segs[1:]):
            qs, ks, vs = q[s0:s1].transpose(0, 1), k[s0:s1].transpose(0, 1), v[s0:s1].transpose(0, 1)
            a_ = torch.softmax((qs @ ks.transpose(1, 2)).float() / math.sqrt(hd), -1).to(dt)
            o[s0:s1] = (a_ @ vs).transpose(0, 1)
        h = h + F.linear(o.reshape(n, d), W[p + "attn.proj.weight"], W[p + "attn.proj.bias"])
        x = rms(h, W[p + "norm2.weight"])
        g = F.silu(F.linear(x, W[p + "mlp.gate_proj.weight"], W[p + "mlp.gate_proj.bias"]))
        g = g * F.linear(x, W[p + "mlp.up_proj.weight"], W[p + "mlp.up_proj.bias"])
        h = h + F.linear(g, W[p + "mlp.down_proj.weight"], W[p + "mlp.down_proj.bias"])
    x = rms(h, W["visual.merger.ln_q.weight"]).reshape(n // (m * m), -1)
    x = F.gelu(F.linear(x, W["visual.merger.mlp.0.weight"], W["visual.merger.mlp.0.bias"]))
    x = F.linear(x, W["visual.merger.mlp.2.weight"], W["visual.merger.mlp.2.bias"])
    return x[torch.argsort(order)]


def timeit(a):
    import torch
    torch.set_num_threads(a.threads)
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[a.dtype]
    cfg = json.load(open(os.path.join(a.dir, "config.json")))["vision_config"]
    W = {k: torch.from_numpy(v.copy()).to(dt) for k, v in st_read(os.path.join(a.dir, "model.safetensors")).items()}
    P = st_read(a.pixels)
    imgs = [(torch.from_numpy(P[f"image.{k}.pixel_values"].copy()), P[f"image.{k}.grid_thw"].tolist())
            for k in range(len([x for x in P if x.endswith(".grid_thw")]))]
    best = float("inf")
    with torch.no_grad():
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            for px, g in imgs:
                tower(torch, W, cfg, px, g, dt)
            best = min(best, time.perf_counter() - t0)
    print(f"torch: dtype={a.dtype} threads={a.threads} images={len(imgs)} seconds={best:.3f} "
          f"images_per_s={len(imgs) / best:.3f} torch={torch.__version__}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--depth", type=int, default=32)
    m.add_argument("--hidden", type=int, default=1280)
    m.add_argument("--inter", type=int, default=3420)
    m.add_argument("--heads", type=int, default=16)
    m.add_argument("--out", type=int, default=2048)
    m.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("pixels")
    p.add_argument("out")
    p.add_argument("--grids", required=True)
    p.add_argument("--seed", type=int, default=2)
    t = sub.add_parser("time")
    t.add_argument("dir")
    t.add_argument("pixels")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--dtype", default="float32")
    t.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    {"make": make, "pixels": pixels, "time": timeit}[a.cmd](a)


if __name__ == "__main__":
    main()
