#!/usr/bin/python3
"""ct_check.py ORIG_DIR EXPORT_DIR: validate a compressed-tensors W8A8 export
against the rules vLLM loads it by (tools survey, "compressed-tensors W8A8
int8"), with its own safetensors reader (numpy + stdlib only).

Prints unnumbered TAP lines ("ok - ..." / "not ok - ...", diagnostics as
"# ..."); always the same number of lines, so a shell test can count them.
"""
import json
import os
import re
import struct
import sys

import numpy as np

PREFIXES = ["model.layers.", "model.language_model.layers.",
            "language_model.model.layers.", "thinker.model.layers."]
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
# which norm carries each linear's folded factor (None: unsmoothed)
FOLD = {"self_attn.q_proj": "input_layernorm", "self_attn.k_proj": "input_layernorm",
        "self_attn.v_proj": "input_layernorm", "self_attn.o_proj": None,
        "mlp.gate_proj": "post_attention_layernorm", "mlp.up_proj": "post_attention_layernorm",
        "mlp.down_proj": None}
DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8, "U8": np.uint8,
          "I16": np.int16, "I32": np.int32, "I64": np.int64, "BF16": None}


class Tensor:
    def __init__(self, path, dtype, shape, raw):
        self.path, self.dtype, self.shape, self.raw = path, dtype, list(shape), raw

    def array(self):
        if self.dtype == "BF16":
            u = np.frombuffer(self.raw, dtype="<u2").astype(np.uint32) << 16
            return u.view(np.float32).reshape(self.shape)
        return np.frombuffer(self.raw, dtype=np.dtype(DTYPES[self.dtype]).newbyteorder("<")).reshape(self.shape)


def read_file(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    head = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in head.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        out[name] = Tensor(path, e["dtype"], e["shape"], data[base + a:base + b])
    return out, head.get("__metadata__", {})


def read_dir(d):
    """(tensors by name, index or None, shard file names)."""
    ip = os.path.join(d, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(ip):
        with open(ip) as f:
            index = json.load(f)
        files = sorted(set(index["weight_map"].values()))
    else:
        index = None
        files = ["model.safetensors"]
    for fn in files:
        t, _ = read_file(os.path.join(d, fn))
        for k, v in t.items():
            v.file = fn
            tensors[k] = v
    return tensors, index, files


results = []


def check(name, cond, diag=""):
    results.append((bool(cond), name, diag))


def main():
    if len(sys.argv) != 3:
        print("usage: ct_check.py ORIG_DIR EXPORT_DIR", file=sys.stderr)
        return 2
    orig_dir, exp_dir = sys.argv[1], sys.argv[2]
    orig, _, _ = read_dir(orig_dir)
    exp, index, files = read_dir(exp_dir)
    prefix = next((p for p in PREFIXES if p + "0.input_layernorm.weight" in orig), None)
    check("the original has decoder layers", prefix is not None)
    prefix = prefix or ""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.(" + "|".join(re.escape(x) for x in LINEARS) + r")\.weight$")
    lin_names = sorted(n for n in orig if pat.match(n))
    check("the original has decoder linears", len(lin_names) > 0, f"prefix {prefix!r}")

    # 1. every decoder linear: I8 [out, in] and F32 [out, 1]
    bad = []
    for n in lin_names:
        w, s = exp.get(n), exp.get(n + "_scale")
        if w is None or w.dtype != "I8" or w.shape != orig[n].shape:
            bad.append(f"{n}: {None if w is None else (w.dtype, w.shape)}")
        if s is None or s.dtype != "F32" or s.shape != [orig[n].shape[0], 1]:
            bad.append(f"{n}_scale: {None if s is None else (s.dtype, s.shape)}")
    check(f"every decoder linear ({len(lin_names)}) has weight I8 [out, in] and weight_scale F32 [out, 1]",
          not bad, "; ".join(bad[:5]))

    # 2. no static activation scales or zero points
    extra = [n for n in exp if n.endswith(("input_scale", "weight_zero_point", "input_zero_point"))]
    check("no input_scale or zero points (dynamic per-token, symmetric)", not extra, ", ".join(extra[:5]))

    # 3. the names: the original set plus weight_scale of the linears
    allowed = set(orig) | {n + "_scale" for n in lin_names}
    unknown = sorted(set(exp) - allowed)
    missing = sorted(set(orig) - set(exp))
    check("no tensor outside the original names but the weight_scales", not unknown, ", ".join(unknown[:5]))
    check("no original tensor is missing", not missing, ", ".join(missing[:5]))

    # 4. everything else keeps its name, dtype and shape; bytes unchanged but for the norms
    norm_re = re.compile(re.escape(prefix) + r"\d+\.(input_layernorm|post_attention_layernorm)\.weight$")
    changed, redtyped = [], []
    for n, t in orig.items():
        if n in lin_names or n not in exp:
            continue
        e = exp[n]
        if e.dtype != t.dtype or e.shape != t.shape:
            redtyped.append(f"{n}: {t.dtype}{t.shape} -> {e.dtype}{e.shape}")
        elif not norm_re.match(n) and e.raw != t.raw:
            changed.append(n)
    check("every other tensor keeps its dtype and shape", not redtyped, "; ".join(redtyped[:5]))
    check("tensors other than decoder linears and norms are copied byte for byte", not changed,
          ", ".join(changed[:5]))

    # 5. the index covers exactly the shards
    present = sorted(f for f in os.listdir(exp_dir)
                     if f.endswith(".safetensors") and f != "masquant.safetensors")
    if index is None:
        check("without an index there is one model.safetensors", present == ["model.safetensors"], str(present))
    else:
        wm = index.get("weight_map", {})
        ok = sorted(set(wm.values())) == present and all(exp[k].file == v for k, v in wm.items() if k in exp) \
            and set(wm) == set(exp)
        total = sum(len(t.raw) for t in exp.values())
        ok = ok and index.get("metadata", {}).get("total_size") == total
        check(f"the index names every tensor and exactly the {len(present)} shards (total_size {total})", ok,
              f"files {sorted(set(wm.values()))} vs {present}")

    # 6. config.json
    with open(os.path.join(orig_dir, "config.json")) as f:
        ocfg = json.load(f)
    with open(os.path.join(exp_dir, "config.json")) as f:
        cfg = json.load(f)
    qc = cfg.pop("quantization_config", None) or {}
    check("config.json is unchanged but for quantization_config", cfg == ocfg)
    g = (qc.get("config_groups") or {}).get("group_0") or {}
    w = g.get("weights") or {}
    a = g.get("input_activations") or {}
    problems = []
    for k, v in [("quant_method", "compressed-tensors"), ("format", "int-quantized")]:
        if qc.get(k) != v:
            problems.append(f"{k}={qc.get(k)!r}")
    if g.get("targets") != ["Linear"]:
        problems.append(f"targets={g.get('targets')!r}")
    for k, v in [("num_bits", 8), ("type", "int"), ("symmetric", True), ("strategy", "channel"), ("dynamic", False)]:
        if w.get(k) != v:
            problems.append(f"weights.{k}={w.get(k)!r}")
    for k, v in [("num_bits", 8), ("strategy", "token"), ("dynamic", True), ("symmetric", True)]:
        if a.get(k) != v:
            problems.append(f"input_activations.{k}={a.get(k)!r}")
    if "lm_head" not in (qc.get("ignore") or []):
        problems.append("ignore lacks lm_head")
    check("quantization_config: compressed-tensors int-quantized, W8 channel static, A8 token dynamic, "
          "ignore lm_head", not problems, "; ".join(problems))

    # 7. numerics: weight * weight_scale reproduces W diag(s) within scale / 2,
    # s recovered per input channel from the norms as orig_norm / new_norm
    worst, nbad, ncols_skipped, bad_scale, bad_lvl, bad_fold = 0.0, 0, 0, [], [], []
    for n in lin_names:
        if n not in exp or n + "_scale" not in exp or exp[n].dtype != "I8":
            continue
        m = pat.match(n)
        layer, lin = m.group(1), m.group(2)
        W = orig[n].array().astype(np.float64)
        q = exp[n].array().astype(np.float64)
        sc = exp[n + "_scale"].array().astype(np.float64).reshape(-1, 1)
        s = np.ones(W.shape[1])
        keep = np.ones(W.shape[1], dtype=bool)
        if FOLD[lin] is not None:
            nn = prefix + layer + "." + FOLD[lin] + ".weight"
            on, en = orig[nn].array().astype(np.float64), exp[nn].array().astype(np.float64)
            keep = on != 0
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.where(keep, on / np.where(en == 0, np.nan, en), 1.0)
            if not np.all(np.isfinite(s[keep])) or not np.all(s[keep] > 0):
                bad_fold.append(nn)
                continue
            ncols_skipped += int((~keep).sum())
        Ws = W * s
        err = np.abs(q * sc - Ws)[:, keep]
        lim = (sc / 2) * (1 + 1e-6) + 1e-6 * np.abs(Ws[:, keep]) + 1e-12
        nbad += int((err > lim).sum())
        worst = max(worst, float((err / (sc / 2)).max()) if err.size else 0.0)
        if np.abs(q).max() > 127:
            bad_lvl.append(n)
        amax = np.abs(Ws[:, keep]).max(axis=1, keepdims=True) if keep.any() else np.zeros_like(sc)
        ok = (sc <= np.maximum(amax / 127.0 * (1 + 1e-5), 1e-5 * (1 + 1e-6))) & \
             (sc >= np.minimum(amax / 127.5 * (1 - 1e-5), 1e-5 * (1 - 1e-6)))
        if not ok.all():
            bad_scale.append(n)
    check("the norms carry positive finite factors (orig / new)", not bad_fold, ", ".join(bad_fold[:5]))
    check("levels are symmetric int8 in [-127, 127]", not bad_lvl, ", ".join(bad_lvl[:5]))
    check("weight_scale is the per-channel absmax / 127 of W diag(s)", not bad_scale, ", ".join(bad_scale[:5]))
    check("weight * weight_scale reproduces W diag(s) within scale / 2 (worst %.4f of the bound%s)"
          % (worst, f", {ncols_skipped} zero-norm columns skipped" if ncols_skipped else ""), nbad == 0,
          f"{nbad} elements out of bound")

    for ok, name, diag in results:
        print(("ok - " if ok else "not ok - ") + name)
        if not ok and diag:
            print("# " + diag)
    return 0 if all(r[0] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
