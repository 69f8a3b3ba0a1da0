#!/usr/bin/python3
"""learn_torch.py: the training step of bench_learn done by PyTorch autograd,
for a same-machine, same-threads comparison (bench/README.md).

    learn_torch.py MODEL_DIR CALIB DUMP [--layer N] [--threads T] [--reps R]

DUMP is what `bench_learn --dump` wrote: the closed-form start factors
(init.<linear>.<modality>), the layer's input h and its target, so both
sides time the same work from the same state.  The step is written the way
the reference writes it (MASQuant's QuantLinear with split scales): per
modality a = x / (s + 1e-5), a fake-quantized per token, W * s per output
channel, both with torch.round passed straight through and the scale left
in the graph (amax/amin backward), y = a W^T (+ b); down_proj with s = 1;
RMSNorm, multimodal RoPE, causal GQA attention, SiLU * up; the pooled
modality-weighted MAE; torch.optim.AdamW.  One step per calibration
sequence, as an epoch does; the median of --reps passes over all the
sequences.  Prints the first step's loss (which bench_learn prints too:
they must agree) and one line `learn_torch: ... step_s=...`.
Needs python3-torch (Debian); not part of the test suite.
"""
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch

LINS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj")
PATHS = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
         "o_proj": "self_attn.o_proj", "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
         "down_proj": "mlp.down_proj"}
MODS = ("text", "vision", "audio")
EPS = 1e-5


def st_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def st_get(path, name):
    h, base = st_header(path)
    e = h[name]
    a, b = e["data_offsets"]
    with open(path, "rb") as f:
        f.seek(base + a)
        raw = f.read(b - a)
    if e["dtype"] == "BF16":
        u = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
        x = u.view(np.float32)
    else:
        x = np.frombuffer(raw, {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4",
                                "U8": "u1"}[e["dtype"]])
    return x.reshape(e["shape"])


def model_tensor(mdir, name):
    idx = os.path.join(mdir, "model.safetensors.index.json")
    if os.path.exists(idx):
        fn = json.load(open(idx))["weight_map"][name]
    else:
        fn = "model.safetensors"
    return st_get(os.path.join(mdir, fn), name)


def find_prefix(mdir):
    idx = os.path.join(mdir, "model.safetensors.index.json")
    names = json.load(open(idx))["weight_map"].keys() if os.path.exists(idx) else \
        st_header(os.path.join(mdir, "model.safetensors"))[0].keys()
    for n in names:
        if n.endswith("self_attn.q_proj.weight"):
            return n[:n.index("layers.") + len("layers.")]
    raise SystemExit("no decoder layers in " + mdir)


def fq(x, bits):
    """Per-row symmetric fake quant, round straight through, scale in the graph."""
    if bits >= 16:
        return x
    qmax = 2 ** (bits - 1) - 1
    am = torch.maximum(x.amax(-1, keepdim=True).abs(), x.amin(-1, keepdim=True).abs())
    scale = (am / qmax).clamp(1e-5, 1e4)
    u = x / scale
    u = u + (u.round() - u).detach()
    return u.clamp(-qmax, qmax) * scale


def main(argv):
    mdir, cpath, dpath = argv[1], argv[2], argv[3]
    layer, threads, reps = 0, int(os.environ.get("OPENBLAS_NUM_THREADS", "2")), 3
    i = 4
    while i + 1 < len(argv):
        if argv[i] == "--layer":
            layer = int(argv[i + 1])
        elif argv[i] == "--threads":
            threads = int(argv[i + 1])
        elif argv[i] == "--reps":
            reps = int(argv[i + 1])
        i += 2
    torch.set_num_threads(threads)
    cfg = json.load(open(os.path.join(mdir, "config.json")))
    tc = cfg.get("text_config", cfg)
    H, KV, D = tc["num_attention_heads"], tc["num_key_value_heads"], tc["hidden_size"]
    hd = tc.get("head_dim", D // H)
    sec = tc.get("rope_scaling", {}).get("mrope_section")
    pre = find_prefix(mdir) + "%d." % layer
    W = {k: torch.from_numpy(np.array(model_tensor(mdir, pre + p + ".weight"), np.float32)) for k, p in PATHS.items()}
    B = {}
    for k in ("q_proj", "k_proj", "v_proj"):
        try:
            B[k] = torch.from_numpy(np.array(model_tensor(mdir, pre + PATHS[k] + ".bias"), np.float32))
        except KeyError:
            B[k] = None
    n1w = torch.from_numpy(np.array(model_tensor(mdir, pre + "input_layernorm.weight"), np.float32))
    n2w = torch.from_numpy(np.array(model_tensor(mdir, pre + "post_attention_layernorm.weight"), np.float32))
    eps_n = tc.get("rms_norm_eps", 1e-6)
    theta = tc.get("rope_theta", 10000.0)
    mod = torch.from_numpy(np.array(st_get(cpath, "modality"), np.int64))
    lens = [int(x) for x in st_get(cpath, "seq_lens")]
    pos = np.array(st_get(cpath, "position_ids"), np.int64)
    if pos.ndim == 1:
        pos = np.stack([pos, pos, pos])
    h_all = torch.from_numpy(np.array(st_get(dpath, "h"), np.float32))
    t_all = torch.from_numpy(np.array(st_get(dpath, "target"), np.float32))
    init = {(k, m): torch.from_numpy(np.array(st_get(dpath, "init.%s.%s" % (k, m)), np.float32))
            for k in LINS for m in MODS}
    wbits, abits = 4, 8
    lam = torch.tensor([1.0, 0.5, 1.0])

    # RoPE tables per token (frequency i from row t, h or w by mrope section)
    half = hd // 2
    inv = 1.0 / (theta ** (np.arange(0, hd, 2) / hd))
    row = np.zeros(half, np.int64)
    if sec:
        row[sec[0]:sec[0] + sec[1]] = 1
        row[sec[0] + sec[1]:] = 2
    ang = pos[row, :].T * inv[None, :]
    cos = torch.from_numpy(np.cos(np.concatenate([ang, ang], 1)).astype(np.float32))
    sin = torch.from_numpy(np.sin(np.concatenate([ang, ang], 1)).astype(np.float32))

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps_n))

    def rot(x, c, s):
        x1, x2 = x[..., :half], x[..., half:]
        return x * c + torch.cat([-x2, x1], -1) * s

    def qlin(x, k, rows, S):
        out = torch.zeros(x.shape[0], W[k].shape[0])
        for m, idx in enumerate(rows):
            if idx.numel() == 0:
                continue
            s = S[(k, MODS[m])] if k != "down_proj" else torch.ones(x.shape[1])
            a = fq(x[idx] / (s + EPS), abits)
            out = out.index_copy(0, idx, a @ fq(W[k] * s, wbits).t())
        b = B.get(k)
        return out + b if b is not None else out

    def step(S, opt, h, tgt, md, c, s_):
        T = h.shape[0]
        rows = [torch.nonzero(md == m).flatten() for m in range(3)]
        x = rms(h, n1w)
        q = rot(qlin(x, "q_proj", rows, S).view(T, H, hd), c[:, None], s_[:, None])
        kk = rot(qlin(x, "k_proj", rows, S).view(T, KV, hd), c[:, None], s_[:, None])
        v = qlin(x, "v_proj", rows, S).view(T, KV, hd)
        kk = kk.repeat_interleave(H // KV, 1)
        v = v.repeat_interleave(H // KV, 1)
        sc = torch.einsum("thd,shd->hts", q, kk) / math.sqrt(hd)
        sc = sc.masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool))[None], float("-inf"))
        att = torch.einsum("hts,shd->thd", sc.softmax(-1), v).reshape(T, H * hd)
        h1 = h + qlin(att, "o_proj", rows, S)
        x2 = rms(h1, n2w)
        a = torch.nn.functional.silu(qlin(x2, "gate_proj", rows, S)) * qlin(x2, "up_proj", rows, S)
        out = h1 + qlin(a, "down_proj", [torch.arange(T)], S)
        loss = (lam[md][:, None] * (out - tgt).abs()).sum() / out.numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss)

    starts = np.concatenate([[0], np.cumsum(lens)])
    times, loss0 = [], None
    for r in range(reps + 1):
        S = {key: v.clone().requires_grad_(True) for key, v in init.items()}
        opt = torch.optim.AdamW(list(S.values()), lr=5e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        t0 = time.time()
        for i in range(len(lens)):
            a, b = int(starts[i]), int(starts[i + 1])
            with torch.no_grad():
                for v in S.values():
                    v.copy_(torch.where(v.abs() < 1e-2, torch.sign(v) * 1e-2, v))
            l = step(S, opt, h_all[a:b], t_all[a:b], mod[a:b], cos[a:b], sin[a:b])
            if i == 0 and loss0 is None:
                loss0 = l
        if r > 0:
            times.append(time.time() - t0)
    st = float(np.median(times))
    print("learn_torch: torch %s, %d threads, layer %d, %d sequences: step (all sequences) %.3f s, first loss %.9g"
          % (torch.__version__, threads, layer, len(lens), st, loss0))
    print("learn_torch: threads=%d step_s=%.4f loss0=%.9g" % (threads, st, loss0))


if __name__ == "__main__":
    main(sys.argv)
