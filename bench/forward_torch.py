#!/usr/bin/python3
"""forward_torch.py: PyTorch's forward of one Qwen2 / Qwen2.5-VL decoder
layer, float32 and bfloat16, on the layer and calibration set bench_forward
measures: the baseline of `bench_forward --compute bf16` (bench/README.md,
"bench_forward --compute bf16").

usage: forward_torch.py MODEL_DIR CALIB [--layer N] [--threads T] [--reps R]

The layer is written as transformers' modeling code runs it (RMSNorm, the
linears, rotate-half RoPE, causal attention per sequence, SiLU-gated MLP),
weights preloaded in the dtype; only the forward is timed, the median of R
runs after one warm-up.  torch 1.13 (Debian 12) has no
scaled_dot_product_attention: attention is softmax(q k^T / sqrt(d)) v per
sequence and head group in the same dtype, as its eager path.  The tables
of RoPE are computed once outside the timing.  Prints, last:
    forward_torch: tokens=N f32_ms=... bf16_ms=... threads=T
"""
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import numpy as np  # noqa: E402
import torch  # noqa: E402

import ref_forward as rf  # noqa: E402


def main(argv):
    args = [a for a in argv]
    layer, threads, reps = 0, 2, 3
    pos = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--layer", "--threads", "--reps"):
            v = int(args[i + 1])
            if a == "--layer":
                layer = v
            elif a == "--threads":
                threads = v
            else:
                reps = v
            i += 2
            continue
        pos.append(a)
        i += 1
    if len(pos) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    torch.set_num_threads(threads)
    m = rf.Model(pos[0])
    cal = rf.Calib(pos[1])
    w = m.layer(layer)
    h0 = np.asarray(cal.embeds, np.float32)
    seq_lens = [int(s) for s in cal.seq_lens]
    T = h0.shape[0]
    H, KV, hd = m.n_heads, m.n_kv, m.head_dim
    cos, sin = rf.rope_tables(cal.pos, hd, m.theta, m.mrope)
    res = {}
    for dt in (torch.float32, torch.bfloat16):
        P = {k: (torch.from_numpy(np.asarray(v, np.float32)).to(dt) if v is not None else None)
             for k, v in w.items()}
        c = torch.from_numpy(np.asarray(cos, np.float32)).to(dt)[:, None, :]
        s = torch.from_numpy(np.asarray(sin, np.float32)).to(dt)[:, None, :]
        h = torch.from_numpy(h0).to(dt)

        def norm(x, g):
            x32 = x.float()
            x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + m.eps)
            return g * x32.to(dt)

        def rot(x):
            return torch.cat((-x[..., hd // 2:], x[..., : hd // 2]), dim=-1)

        def fwd(h):
            x = norm(h, P["in_norm"])
            q = torch.nn.functional.linear(x, P["q"], P["bq"]).view(T, H, hd)
            k = torch.nn.functional.linear(x, P["k"], P["bk"]).view(T, KV, hd)
            v = torch.nn.functional.linear(x, P["v"], P["bv"]).view(T, KV, hd)
            q = q * c + rot(q) * s
            k = k * c + rot(k) * s
            out = torch.empty(T, H, hd, dtype=dt)
            a = 0
            g = H // KV
            for n in seq_lens:
                mask = torch.full((n, n), float("-inf"), dtype=dt).triu(1)
                qs = q[a:a + n].transpose(0, 1)                   # H, n, hd
                ks = k[a:a + n].transpose(0, 1).repeat_interleave(g, 0)
                vs = v[a:a + n].transpose(0, 1).repeat_interleave(g, 0)
                sc = torch.matmul(qs, ks.transpose(1, 2)) * (hd ** -0.5) + mask
                p = torch.softmax(sc, dim=-1, dtype=torch.float32).to(dt)
                out[a:a + n] = torch.matmul(p, vs).transpose(0, 1)
                a += n
            h = h + torch.nn.functional.linear(out.reshape(T, H * hd), P["o"])
            x = norm(h, P["post_norm"])
            act = torch.nn.functional.silu(torch.nn.functional.linear(x, P["gate"])) * \
                torch.nn.functional.linear(x, P["up"])
            return h + torch.nn.functional.linear(act, P["down"])

        with torch.no_grad():
            fwd(h)
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fwd(h)
                ts.append(time.perf_counter() - t0)
        res[dt] = sorted(ts)[len(ts) // 2]
        print("torch %s: %s ms" % (str(dt).replace("torch.", ""), " ".join("%.1f" % (t * 1e3) for t in ts)))
    print("forward_torch: tokens=%d f32_ms=%.2f bf16_ms=%.2f threads=%d torch=%s" % (
        T, res[torch.float32] * 1e3, res[torch.bfloat16] * 1e3, threads, torch.__version__))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
