#!/usr/bin/python3
"""golden_convert.py: turn the reference's golden gradient data for learned MAS
(../shared/reference/golden/learned-mas-tiny/layer0_w4a8_fp32.npz, computed by
the reference's own QuantLinear in float32 on layer 0 of the tiny demo, W4A8,
sequence 0) into a safetensors fixture the C tests read without numpy:

  init.<linear>.<modality>    F32 [in]  the closed-form start (after the copies)
  grad.<linear>.<modality>    F32 [in]  d loss / d s at the start
  after1.<linear>.<modality>  F32 [in]  the factors after one AdamW step
  loss0                       F64 [1]
  losses_2epochs              F64 [8]   the loss of each step of 2 epochs

<linear> is q_proj ... up_proj, <modality> text, vision, audio.  The metadata
records the sha256 of the model and calibration files the data belong to, so
a test can check that `masq demo --preset tiny` still writes the same ones.
Run once: golden_convert.py GOLDEN_DIR OUT.safetensors
"""
import hashlib
import json
import os
import struct
import sys

import numpy as np

LIN = {"q_proj": "self_attn_q_proj", "k_proj": "self_attn_k_proj", "v_proj": "self_attn_v_proj",
       "o_proj": "self_attn_o_proj", "gate_proj": "mlp_gate_proj", "up_proj": "mlp_up_proj"}
MODS = ("text", "vision", "audio")


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main(gdir, out):
    z = np.load(os.path.join(gdir, "layer0_w4a8_fp32.npz"))
    tensors = []
    for pre in ("init", "grad", "after1"):
        for k, g in LIN.items():
            for m in MODS:
                tensors.append(("%s.%s.%s" % (pre, k, m),
                                np.asarray(z["%s.lin.%s.%s_smooth_scale" % (pre, g, m)], "<f4")))
    tensors.append(("loss0", np.asarray([float(z["loss0"])], "<f8")))
    tensors.append(("losses_2epochs", np.asarray(z["losses_2epochs"], "<f8")))
    header, off, blobs = {}, 0, []
    for name, a in tensors:
        b = a.tobytes()
        header[name] = {"dtype": "F32" if a.dtype == np.float32 else "F64",
                        "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    header["__metadata__"] = {
        "source": "reference QuantLinear, float32, layer 0, W4A8, sequence 0",
        "model_sha256": sha(os.path.join(gdir, "model", "model.safetensors")),
        "calib_sha256": sha(os.path.join(gdir, "calib.safetensors")),
    }
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
