#!/usr/bin/env python3
"""tests/mpi_check.py: one process's masq forward against the same run
under mpirun (tests/mpi.sh).

    mpi_check.py outputs ONE.safetensors ONE.json MANY.safetensors MANY.json NP TOL [SUMTOL]

prints TAP lines "ok - ..." / "not ok - ...": the same tensors and
shapes, values within TOL relative to each layer's largest |value|, the
JSON's token count and layers equal, its maxima and RMS within TOL
relative, its median channel maxima within TOL of their site's maximum,
the RMS (a sum over the processes) within SUMTOL relative (default TOL),
and the process count recorded.  TOL 0 asks for the same bits.
"""
import json
import struct
import sys

import numpy as np


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = (v["dtype"], tuple(v["shape"]), np.frombuffer(data[a:b], dtype="<f4").reshape(v["shape"]))
    return out, head.get("__metadata__", {})


def say(good, what):
    print(("ok - " if good else "not ok - ") + what)


def close(a, b, tol):
    return abs(a - b) <= tol * max(abs(a), abs(b), 1e-30)


def main():
    one_st, one_js, many_st, many_js, np_, tol = sys.argv[1:7]
    np_, tol = int(np_), float(tol)
    sumtol = float(sys.argv[7]) if len(sys.argv) > 7 else tol
    a, ma = load(one_st)
    b, mb = load(many_st)
    say(sorted(a) == sorted(b) and all(a[k][:2] == b[k][:2] for k in a),
        "np %d: the same tensors, dtypes and shapes (%d)" % (np_, len(a)))
    say(ma == mb, "np %d: the same metadata" % np_)
    worst = 0.0
    for k in a:
        if k in b and a[k][1] == b[k][1]:
            x, y = a[k][2].astype(np.float64), b[k][2].astype(np.float64)
            worst = max(worst, float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-30)))
    say(worst <= tol, "np %d: every layer's output within %g of one process's (worst %.3g)" % (np_, tol, worst))
    ja, jb = json.load(open(one_js)), json.load(open(many_js))
    say(ja["tokens"] == jb["tokens"] and len(ja["layers"]) == len(jb["layers"]),
        "np %d: the same tokens (%d) and layers" % (np_, jb["tokens"]))
    say(jb.get("processes", 1) == np_, "np %d: the JSON says %s processes" % (np_, jb.get("processes", 1)))
    bad = []
    for la, lb in zip(ja["layers"], jb["layers"]):
        for site, v in la.items():
            if site in ("layer", "seconds"):
                continue
            if site == "hidden_rms":
                for m, r in v.items():
                    if not close(r, lb[site][m], sumtol):
                        bad.append("layer %d rms %s" % (la["layer"], m))
                continue
            for m, st in v.items():
                # the median channel max against the site's scale (its
                # absmax): a small value carries the same absolute error
                scale = max(abs(st["absmax"]), 1e-30)
                if not close(st["absmax"], lb[site][m]["absmax"], tol):
                    bad.append("layer %d %s %s absmax" % (la["layer"], site, m))
                if abs(st["median_channel_max"] - lb[site][m]["median_channel_max"]) > tol * scale:
                    bad.append("layer %d %s %s median_channel_max" % (la["layer"], site, m))
    say(not bad, "np %d: maxima and channel medians within %g, RMS within %g (%s)" % (
        np_, tol, sumtol, ", ".join(bad[:4]) or "all"))


if __name__ == "__main__":
    main()
