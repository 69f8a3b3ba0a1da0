#!/usr/bin/env python3
"""demo_check.py: check what `masq demo` wrote, independently of masq.

    demo_check.py calib FILE --hidden H --seqs N --preset NAME
    demo_check.py model DIR [--shard-bytes B]

Prints one line per check, "PASS <what>" or "FAIL <what>: <why>", and
"# <text>" for the measured figures; tests/demo.sh turns them into TAP.
Needs numpy only (stdlib otherwise: no safetensors package).
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "U8": np.uint8, "I32": np.int32,
          "I64": np.int64, "BF16": np.uint16, "F16": np.float16}
SIZES = {"F32": 4, "F64": 8, "U8": 1, "I32": 4, "I64": 8, "BF16": 2, "F16": 2}

failed = 0


def report(ok, what, why=""):
    global failed
    if ok:
        print("PASS %s" % what)
    else:
        failed += 1
        print("FAIL %s: %s" % (what, why))


def diag(text):
    print("# %s" % text)


def st_read(path):
    """Header dict and {name: array} (BF16 as float32) of a safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    arrays = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        a = np.frombuffer(blob[base + b:base + end], dtype=DTYPES[e["dtype"]])
        if e["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        arrays[name] = a.reshape(e["shape"])
    return header, arrays


def top_energy(x, frac=0.10):
    """Share of the energy carried by the top frac of x's singular values."""
    s = np.linalg.svd(x, compute_uv=False) ** 2
    k = max(1, int(np.ceil(frac * len(s))))
    return float(s[:k].sum() / s.sum())


def check_positions(pos, mod, lens):
    """Qwen2-VL get_rope_index rules; returns a fault or ''."""
    t0 = 0
    for s, n in enumerate(lens):
        p = pos[:, t0:t0 + n]
        m = mod[t0:t0 + n]
        if p[0, 0] != 0 or p[1, 0] != 0 or p[2, 0] != 0:
            return "sequence %d does not start at position 0" % s
        prev_max = -1
        i = 0
        while i < n:
            if m[i] != 1:
                if not (p[0, i] == p[1, i] == p[2, i]):
                    return "sequence %d token %d (modality %d): t, h, w differ" % (s, i, m[i])
                if p[0, i] != prev_max + 1:
                    return "sequence %d token %d: position %d, expected %d" % (
                        s, i, p[0, i], prev_max + 1)
                prev_max = p[0, i]
                i += 1
                continue
            j = i
            while j < n and m[j] == 1:
                j += 1
            blk = p[:, i:j]
            st = prev_max + 1
            if not np.all(blk[0] == st):
                return "sequence %d image at token %d: t not constant %d" % (s, i, st)
            gw = int(blk[2].max() - st + 1)
            idx = np.arange(j - i)
            if (j - i) % gw != 0 or not np.array_equal(blk[1] - st, idx // gw) or \
                    not np.array_equal(blk[2] - st, idx % gw):
                return "sequence %d image at token %d: h, w are not a row-major grid" % (s, i)
            prev_max = int(blk.max())
            i = j
        t0 += n
    return ""


def check_calib(a):
    header, t = st_read(a.file)
    meta = header.get("__metadata__", {})
    report(meta.get("calib_format") == "masq-calib" and meta.get("calib_version") == "1"
           and ("preset=%s " % a.preset) in meta.get("source", ""),
           "calib metadata names format, version and source", repr(meta))
    shapes = {k: (header[k]["dtype"], header[k]["shape"]) for k in t}
    x, mod, lens, pos = (t.get(k) for k in ("inputs_embeds", "modality", "seq_lens",
                                             "position_ids"))
    if x is None or mod is None or lens is None or pos is None:
        report(False, "calib tensors present", repr(shapes))
        return
    T = x.shape[0]
    report(shapes["inputs_embeds"] == ("F32", [T, a.hidden]) and shapes["modality"] == ("U8", [T])
           and shapes["seq_lens"] == ("I32", [a.seqs]) and shapes["position_ids"] == ("I64", [3, T]),
           "calib dtypes and shapes", repr(shapes))
    report(int(lens.sum()) == T and lens.min() > 0, "seq_lens sum to the token count",
           "%d vs %d" % (lens.sum(), T))
    report(set(np.unique(mod)) <= {0, 1, 2}, "modality codes in {0,1,2}", repr(np.unique(mod)))
    share = [float((mod == m).mean()) for m in range(3)]
    diag("tokens %d; text %.3f vision %.3f audio %.3f" % (T, *share))
    report(0.25 <= share[0] <= 0.35 and 0.45 <= share[1] <= 0.60 and 0.15 <= share[2] <= 0.25,
           "modality shares text 25-35%, vision 45-60%, audio 15-25%", repr(share))
    report(bool(np.all(np.isfinite(x))), "embeddings are finite")

    x = x.astype(np.float64)
    xn = x / np.sqrt((x * x).mean(1, keepdims=True))     # what RMSNorm hands the linears
    # Floors sit below what 40 seeds gave (tiny: raw 17-53, normalised 6-13).
    for label, v, floor in (("raw", x, 12.0), ("RMS-normalised", xn, 4.0)):
        R = np.stack([np.abs(v[mod == m]).max(0) for m in range(3)])
        ratio = float(np.median(R[1]) / np.median(R[0]))
        dom = R.argmax(0)
        diag("%s: median channel max text %.3g vision %.3g audio %.3g; vision/text %.1f; "
             "channels dominated text %d vision %d audio %d" %
             (label, *np.median(R, 1), ratio, *(int((dom == m).sum()) for m in range(3))))
        report(ratio >= floor, "%s vision/text median channel max >= %g" % (label, floor),
               "%.2f" % ratio)
        report((R[0] > R[1]).any(), "%s: some channel's max is text's, not vision's" % label)
        report(((R[2] > R[1]) & (R[2] > R[0])).any(), "%s: some channel's max is audio's" % label)

    fault = check_positions(pos, mod, lens)
    report(fault == "", "position_ids follow Qwen2-VL's rope index", fault)

    for m, name in enumerate(("text", "vision", "audio")):
        xm = x[mod == m]
        e_all = top_energy(xm)
        # without the 10% largest channels of this modality (its outliers)
        R = np.abs(xm).max(0)
        keep = R <= np.quantile(R, 0.9)
        e_base = top_energy(xm[:, keep])
        diag("%s: top-10%% singular values carry %.3f of the energy (%.3f without its "
             "largest channels)" % (name, e_all, e_base))
        report(e_all > 0.6 and e_base > 0.6, "%s embeddings are anisotropic" % name,
               "%.3f / %.3f" % (e_all, e_base))


def check_model(a):
    d = a.dir
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    tc = cfg["text_config"]
    report(cfg["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
           and cfg["model_type"] == "qwen2_5_vl" and tc["model_type"] == "qwen2_5_vl_text"
           and cfg["image_token_id"] == 151655 and "masq_demo" in cfg,
           "config.json is Qwen2.5-VL-shaped")
    H, I, L = tc["hidden_size"], tc["intermediate_size"], tc["num_hidden_layers"]
    nh, nkv, hd = tc["num_attention_heads"], tc["num_key_value_heads"], tc["head_dim"]
    report(sum(tc["rope_scaling"]["mrope_section"]) == hd // 2 and nh % nkv == 0,
           "mrope_section sums to head_dim/2")
    for extra in ("generation_config.json", "tokenizer_config.json"):
        try:
            with open(os.path.join(d, extra)) as f:
                json.load(f)
            report(True, "%s parses" % extra)
        except (OSError, ValueError) as e:
            report(False, "%s parses" % extra, str(e))

    idx_path = os.path.join(d, "model.safetensors.index.json")
    headers, tensors = {}, {}
    if a.shard_bytes:
        with open(idx_path) as f:
            idx = json.load(f)
        wm = idx["weight_map"]
        files = sorted(set(wm.values()))
        on_disk = sorted(fn for fn in os.listdir(d)
                         if fn.startswith("model-") and fn.endswith(".safetensors"))
        report(len(files) > 1 and files == on_disk, "index weight_map covers every shard",
               "%r vs %r" % (files, on_disk))
        for fn in files:
            headers[fn], arr = st_read(os.path.join(d, fn))
            for k, v in arr.items():
                tensors[k] = (fn, v)
        report(all(wm.get(k) == fn for k, (fn, _) in tensors.items()) and len(wm) == len(tensors),
               "weight_map names exactly the shards' tensors")
        total = sum(e["data_offsets"][1] - e["data_offsets"][0]
                    for h in headers.values() for k, e in h.items() if k != "__metadata__")
        report(idx["metadata"]["total_size"] == total, "index total_size is the tensor bytes",
               "%r vs %d" % (idx["metadata"]["total_size"], total))
        for fn, h in headers.items():
            ents = [e for k, e in h.items() if k != "__metadata__"]
            size = sum(e["data_offsets"][1] - e["data_offsets"][0] for e in ents)
            report(size <= a.shard_bytes or len(ents) == 1, "%s within the shard size" % fn,
                   "%d bytes" % size)
    else:
        report(not os.path.exists(idx_path), "one file, no index")
        h, arr = st_read(os.path.join(d, "model.safetensors"))
        headers["model.safetensors"] = h
        tensors = {k: ("model.safetensors", v) for k, v in arr.items()}

    report(all(e["dtype"] == "BF16" for h in headers.values()
               for k, e in h.items() if k != "__metadata__"), "every weight is BF16")
    want = {"model.language_model.embed_tokens.weight": [tc["vocab_size"], H],
            "model.language_model.norm.weight": [H], "lm_head.weight": [tc["vocab_size"], H]}
    for i in range(L):
        p = "model.language_model.layers.%d." % i
        want.update({p + "input_layernorm.weight": [H], p + "post_attention_layernorm.weight": [H],
                     p + "self_attn.q_proj.weight": [nh * hd, H], p + "self_attn.q_proj.bias": [nh * hd],
                     p + "self_attn.k_proj.weight": [nkv * hd, H], p + "self_attn.k_proj.bias": [nkv * hd],
                     p + "self_attn.v_proj.weight": [nkv * hd, H], p + "self_attn.v_proj.bias": [nkv * hd],
                     p + "self_attn.o_proj.weight": [H, nh * hd],
                     p + "mlp.gate_proj.weight": [I, H], p + "mlp.up_proj.weight": [I, H],
                     p + "mlp.down_proj.weight": [H, I]})
    bad = [k for k, s in want.items() if k not in tensors or list(tensors[k][1].shape) != s]
    report(not bad, "every text tensor present with its shape", repr(bad[:5]))
    vis = [k for k in tensors if k.startswith("model.visual.")]
    vbytes = sum(tensors[k][1].size * 2 for k in vis)
    report("model.visual.patch_embed.proj.weight" in tensors and 0 < vbytes < (1 << 20),
           "a small vision tower rides along", "%d tensors, %d bytes" % (len(vis), vbytes))
    extra = [k for k in tensors if k not in want and not k.startswith("model.visual.")]
    report(not extra, "no unexpected tensors", repr(extra[:5]))
    if not bad:
        w = tensors["model.language_model.layers.0.self_attn.q_proj.weight"][1]
        cm = np.abs(w).max(0)
        diag("q_proj column max: median %.3g, largest %.3g" % (np.median(cm), cm.max()))
        report(cm.max() > 1.5 * np.median(cm), "weight column maxima vary")
        nw = tensors["model.language_model.layers.0.input_layernorm.weight"][1]
        report(abs(np.median(nw) - 1) < 0.1 and nw.max() > 2, "norm weights near 1, a few large")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("calib")
    c.add_argument("file")
    c.add_argument("--hidden", type=int, required=True)
    c.add_argument("--seqs", type=int, required=True)
    c.add_argument("--preset", required=True)
    m = sub.add_parser("model")
    m.add_argument("dir")
    m.add_argument("--shard-bytes", type=int, default=0)
    a = ap.parse_args()
    try:
        (check_calib if a.what == "calib" else check_model)(a)
    except Exception as e:  # a malformed output is a failed check, not a crash
        report(False, "%s readable" % a.what, "%s: %s" % (type(e).__name__, e))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
