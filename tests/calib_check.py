#!/usr/bin/python3
"""calib_check.py: compare what masq computed for masq calib with the
references, printing unnumbered TAP ("ok - ..." / "not ok - ...") for
tests/calib.sh.  numpy only; the references are other scripts:

  images OURS REF          image_driver's and ref_imageproc.py's files:
                           resized pixels identical, pixel_values within
                           IMG_TOL (absolute), grids identical
  vision OURS REF PLAIN    vision_driver's (fast, plain twin) and
                           ref_vision.py's: every block and the merger
                           within VIT_TOL of the reference (relative to the
                           tensor's largest magnitude), the fast path
                           within VIT_TWIN_TOL of the twin
  set CALIB MODEL ORACLE PHOTOS TESTS
                           a whole calibration set against an oracle put
                           together here from independent parts: the ids of
                           transformers.js (ORACLE, from calib-oracle.js),
                           the image features of ref_imageproc.py and
                           ref_vision.py run on the photographs, the
                           positions of ref_rope_index.py, the embedding
                           rows read from MODEL's checkpoint
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

IMG_TOL = 1e-6       # pixel_values: both compute (u8 * 1/255 in double, to f32 - mean) / std in f32
VIT_TOL = 2e-5       # f32 against numpy's f32 (other summation orders, expf/erff, BLAS)
VIT_TWIN_TOL = 2e-5  # sgemm and float sums against double sums

DT = {"F32": np.float32, "F16": np.float16, "U8": np.uint8, "I32": np.int32, "I64": np.int64}


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
            a = np.frombuffer(raw, DT[v["dtype"]])
        out[k] = a.reshape(v["shape"])
    return out


def st_dir(model):
    """every tensor of a model directory (one file or shards)"""
    idx = os.path.join(model, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    t = {}
    for f in files:
        t.update(st_read(os.path.join(model, f)))
    return t


def tap(ok, what):
    print(("ok - " if ok else "not ok - ") + what)
    return ok


def rel(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def images(ours, ref):
    a, b = st_read(ours), st_read(ref)
    n = len([k for k in b if k.endswith(".resized")])
    tap(n > 0 and set(a) == set(b), f"the same {n} images and tensors")
    for i in range(n):
        ra, rb = a[f"image.{i}.resized"], b[f"image.{i}.resized"]
        same = ra.shape == rb.shape and np.array_equal(ra, rb)
        tap(same, f"image {i}: resized to {rb.shape[1]}x{rb.shape[0]}, every pixel as Pillow's")
        tap(np.array_equal(a[f"image.{i}.grid_thw"], b[f"image.{i}.grid_thw"]),
            f"image {i}: grid {b[f'image.{i}.grid_thw'].tolist()}")
        pa, pb = a[f"image.{i}.pixel_values"], b[f"image.{i}.pixel_values"]
        d = float(np.abs(pa.astype(np.float64) - pb).max()) if pa.shape == pb.shape else float("inf")
        tap(d <= IMG_TOL, f"image {i}: pixel_values {pb.shape} within {IMG_TOL} (max {d:.1e})")


def vision(ours, ref, plain):
    a, b, p = st_read(ours), st_read(ref), st_read(plain)
    keys = sorted(k for k in b if k.endswith(".merged") or ".block." in k or k.endswith(".patch_embed"))
    tap(len(keys) > 0 and all(k in a and k in p for k in keys), f"{len(keys)} tensors in all three files")
    worst, worst_twin = 0.0, 0.0
    for k in keys:
        if a[k].shape != b[k].shape:
            tap(False, f"{k}: shape {a[k].shape}, reference {b[k].shape}")
            continue
        e, t = rel(a[k], b[k]), rel(a[k], p[k])
        worst, worst_twin = max(worst, e), max(worst_twin, t)
        if k.endswith(".merged"):
            tap(e <= VIT_TOL, f"{k} {b[k].shape} against the reference: {e:.1e} <= {VIT_TOL}")
    blocks = [k for k in keys if not k.endswith(".merged")]
    tap(all(rel(a[k], b[k]) <= VIT_TOL for k in blocks),
        f"the patch embedding and every block ({len(blocks)}) against the reference: worst {worst:.1e} <= {VIT_TOL}")
    tap(worst_twin <= VIT_TWIN_TOL, f"the fast path against its plain twin: worst {worst_twin:.1e} <= {VIT_TWIN_TOL}")


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"not ok - {' '.join(cmd[:3])} failed: {r.stderr.strip()[:400]}")


def calib_set(calib, model, oracle, photos, tests):
    py = sys.executable
    c = st_read(calib)
    cfg = json.load(open(os.path.join(model, "config.json")))
    image_tok = cfg["image_token_id"]
    w = st_dir(model)
    embed = w["model.language_model.embed_tokens.weight"].astype(np.float32)
    merge = cfg["vision_config"]["spatial_merge_size"]
    samples = [json.loads(l) for l in open(oracle) if l.strip()]
    lens = c["seq_lens"].tolist()
    tap(len(lens) == len(samples), f"{len(samples)} sequences")
    tmp = tempfile.mkdtemp()
    at = 0
    worst = 0.0
    ok_text = ok_mod = ok_pos = ok_len = True
    for s_i, s in enumerate(samples):
        grids, feats = [], []
        if s["images"]:
            paths = [os.path.join(photos, f) for f in s["images"]]
            px, vf = os.path.join(tmp, f"px{s_i}.st"), os.path.join(tmp, f"vf{s_i}.st")
            run([py, os.path.join(tests, "ref_imageproc.py"), "--config",
                 os.path.join(model, "preprocessor_config.json"), "--out", px] + paths)
            run([py, os.path.join(tests, "ref_vision.py"), model, px, vf])
            pv, fv = st_read(px), st_read(vf)
            for i in range(len(paths)):
                grids.append(pv[f"image.{i}.grid_thw"].tolist())
                feats.append(fv[f"image.{i}.merged"])
        # the oracle's ids with each image pad repeated to its tokens
        ids, rows, mod = [], [], []
        k = 0
        for t in s["ids"]:
            if t == image_tok:
                g = grids[k]
                cnt = g[0] * g[1] * g[2] // (merge * merge)
                ids += [image_tok] * cnt
                rows.append(feats[k])
                mod += [1] * cnt
                k += 1
            else:
                ids.append(t)
                rows.append(embed[t][None, :])
                mod.append(0)
        want = np.concatenate(rows, 0)
        n = len(ids)
        ok_len &= lens[s_i] == n
        got = c["inputs_embeds"][at:at + n].astype(np.float32)
        m = np.array(mod, np.uint8)
        ok_mod &= np.array_equal(c["modality"][at:at + n], m)
        if got.shape == want.shape:
            ok_text &= np.array_equal(got[m == 0], want[m == 0])
            if (m == 1).any():
                worst = max(worst, rel(got[m == 1], want[m == 1]))
        else:
            ok_text = False
        # positions
        rin, rout = os.path.join(tmp, f"r{s_i}.json"), os.path.join(tmp, f"p{s_i}.json")
        json.dump({"input_ids": ids, "image_grid_thw": grids, "spatial_merge_size": merge,
                   "image_token_id": image_tok, "vision_start_token_id": cfg["vision_start_token_id"],
                   "video_token_id": cfg["video_token_id"]}, open(rin, "w"))
        run([py, os.path.join(tests, "ref_rope_index.py"), rin, rout])
        pos = np.array(json.load(open(rout))["position_ids"], np.int64)
        ok_pos &= np.array_equal(c["position_ids"][:, at:at + n], pos)
        at += n
    tap(ok_len and at == c["inputs_embeds"].shape[0], f"every sequence as long as the oracle's ({at} tokens)")
    tap(ok_mod, "every token's modality as the oracle's ids give it")
    tap(ok_text, "every text token's embedding is its row of the checkpoint, bit for bit")
    tap(worst <= VIT_TOL, f"every image token's features as the references compute them: {worst:.1e} <= {VIT_TOL}")
    tap(ok_pos, "every position as get_rope_index's (ref_rope_index.py)")


def main():
    what = sys.argv[1]
    if what == "images":
        images(*sys.argv[2:4])
    elif what == "vision":
        vision(*sys.argv[2:5])
    elif what == "set":
        calib_set(*sys.argv[2:7])
    else:
        raise SystemExit(f"calib_check.py: unknown check {what}")


if __name__ == "__main__":
    main()
