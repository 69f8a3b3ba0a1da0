#!/usr/bin/python3
"""calib_concat.py OUT IN1 IN2 ...: one masq-calib(5) set of every input
set's sequences, in order (inputs_embeds, modality, seq_lens and the
optional position_ids concatenated along the token axis).

run.sh uses it to give the pipeline benchmark a calibration set several
times the 3b preset's 2047 tokens, from demos written with other seeds (the
pipeline's token-proportional steps then weigh as they do on a real set)."""

import json
import struct
import sys

import numpy as np

DT = {"F32": np.float32, "I64": np.int64, "I32": np.int32, "U8": np.uint8}


def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    meta = head.pop("__metadata__", {})
    if meta.get("calib_format") != "masq-calib":
        sys.exit("calib_concat: %s is not a masq-calib set" % path)
    out = {}
    for name, t in head.items():
        if t["dtype"] not in DT:
            sys.exit("calib_concat: %s: %s is %s (only F32, I64, I32, U8 here)"
                     % (path, name, t["dtype"]))
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(data[a:b], DT[t["dtype"]]).reshape(t["shape"])
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: calib_concat.py OUT IN1 [IN2 ...]")
    sets = [read(p) for p in sys.argv[2:]]
    names = set(sets[0])
    for p, s in zip(sys.argv[2:], sets):
        if set(s) != names:
            sys.exit("calib_concat: %s has tensors %s, the first set %s"
                     % (p, sorted(s), sorted(names)))
        if "deepstack.0" in s:
            sys.exit("calib_concat: %s carries deepstack features (not here)" % p)
    cat = {}
    for name in sorted(names):
        axis = 1 if name == "position_ids" and sets[0][name].ndim == 2 else 0
        cat[name] = np.ascontiguousarray(np.concatenate([s[name] for s in sets], axis=axis))
    head = {"__metadata__": {"format": "pt", "calib_format": "masq-calib", "calib_version": "1",
                             "source": "calib_concat.py of %d sets" % len(sets)}}
    inv = {v: k for k, v in DT.items()}
    off = 0
    for name, a in cat.items():
        head[name] = {"dtype": inv[a.dtype.type], "shape": list(a.shape),
                      "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    hj = json.dumps(head, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    with open(sys.argv[1], "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for a in cat.values():
            f.write(a.tobytes())


main()
