#!/usr/bin/env python3
"""PyTorch's dynamic int8 Linear at the shapes bench_igemm times.

torch.ao.quantization.quantize_dynamic turns each nn.Linear into a dynamic
quantized one (weights int8 per output channel, activations quantized per
call; fbgemm on x86): the closest thing PyTorch ships to masq's W8A8 integer
path.  Same shapes, same thread count, medians over the reps; prints one
line per linear and "total_ms=...".  A benchmark baseline only: never run
by make check.
"""
import argparse
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    for k, v in (("tokens", 2047), ("hidden", 2048), ("inter", 11008), ("kv", 256), ("threads", 2), ("reps", 3)):
        ap.add_argument("--" + k, type=int, default=v)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(16)
    shapes = [("q", a.hidden, a.hidden), ("k", a.kv, a.hidden), ("v", a.kv, a.hidden), ("o", a.hidden, a.hidden),
              ("gate", a.inter, a.hidden), ("up", a.inter, a.hidden), ("down", a.hidden, a.inter)]
    total = 0.0
    print("pytorch %s, dynamic int8 Linear (%s engine), %d threads" %
          (torch.__version__, torch.backends.quantized.engine, a.threads))
    with torch.no_grad():
        for name, out, inn in shapes:
            lin = torch.nn.Sequential(torch.nn.Linear(inn, out, bias=False))
            q = torch.ao.quantization.quantize_dynamic(lin, {torch.nn.Linear}, dtype=torch.qint8)
            x = torch.randn(a.tokens, inn)
            q(x)
            times = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                q(x)
                times.append(time.perf_counter() - t0)
            ms = statistics.median(times) * 1e3
            total += ms
            print("pytorch %-5s %6d x %-6d %10.1f ms" % (name, out, inn, ms))
    print("pytorch total_ms=%.1f" % total)


if __name__ == "__main__":
    main()
