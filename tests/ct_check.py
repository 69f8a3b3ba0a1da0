#!/usr/bin/python3
"""ct_check.py ORIG_DIR EXPORT_DIR: validate a compressed-tensors export of
ORIG_DIR against the rules vLLM and compressed-tensors load it by, with its own
safetensors reader (numpy + stdlib only).

The format comes from config.json's quantization_config:
  int-quantized   W8A8 int8: I8 weights, F32 per-channel scales, dynamic
                  per-token int8 activations (vLLM CompressedTensorsW8A8Int8);
  pack-quantized  weight-only W4A16 / W8A16 (vLLM CompressedTensorsWNA16):
                  weight_packed I32, weight_scale in the weight's dtype,
                  weight_zero_point I32 when asymmetric, weight_shape I64.
Anything else is checked as int-quantized, and fails there.

For pack-quantized the integer levels, zero points and scales must equal,
exactly, MASQuant's reference quantizer (shared/reference/masquant-brief.md
section 4) run here in numpy float32 on W diag(s), s recovered per input
column from the norms as orig / exported.

Upstream rules, written from (not copied from):
  compressed-tensors 0.18.0 (vllm-project/compressed-tensors, tag 0.18.0):
    compressors/pack_quantized/helpers.py  pack_to_int32 / unpack_from_int32
    compressors/pack_quantized/base.py     names, zero points packed on dim 0
    quantization/quant_args.py             QuantizationArgs fields, validators
    quantization/quant_scheme.py           QuantizationScheme fields, validator
    quantization/utils/helpers.py          calculate_range: int range
                                           [-2^(b-1), 2^(b-1)-1]
  vLLM (docs.vllm.ai latest, 2026):
    compressed_tensors/compressed_tensors.py  from_config,
      _quantization_scheme_map_from_config, _get_scheme_from_parts, _is_*
    compressed_tensors/schemes/compressed_tensors_wNa16.py  create_weights
    utils/marlin_utils.py  MARLIN_SUPPORTED_GROUP_SIZES, zp types

Prints unnumbered TAP lines ("ok - ..." / "not ok - ...", diagnostics as
"# ..."); for a given format always the same number of ok/not ok lines, so a
shell test can count them.  Exit status 0 iff every line is ok.
"""
import json
import math
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
          "I16": np.int16, "I32": np.int32, "I64": np.int64, "U16": np.uint16, "U32": np.uint32,
          "U64": np.uint64, "BOOL": np.bool_, "BF16": None}
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
            "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}

# what the reader found wrong, across every file it read: (file, tensor, problem)
HEADER_PROBLEMS = []
MISALIGNED = []


class Tensor:
    def __init__(self, path, dtype, shape, raw, offset=0):
        self.path, self.dtype, self.shape, self.raw, self.offset = path, dtype, list(shape), raw, offset

    def array(self):
        if self.dtype == "BF16":
            u = np.frombuffer(self.raw, dtype="<u2").astype(np.uint32) << 16
            return u.view(np.float32).reshape(self.shape)
        return np.frombuffer(self.raw, dtype=np.dtype(DTYPES[self.dtype]).newbyteorder("<")).reshape(self.shape)

    def bits16(self):
        """The raw 16-bit patterns of a BF16/F16 tensor."""
        return np.frombuffer(self.raw, dtype="<u2").reshape(self.shape)


def read_file(path):
    """(tensors by name, __metadata__) of one .safetensors file.  Problems with
    the header (unknown dtype, sizes that do not match shapes, data outside the
    file, holes or overlaps, offsets not a multiple of the element size) are
    collected in HEADER_PROBLEMS / MISALIGNED, not raised."""
    with open(path, "rb") as f:
        data = f.read()
    fn = os.path.basename(path)
    n = struct.unpack("<Q", data[:8])[0]
    head = json.loads(data[8:8 + n])
    base = 8 + n
    size = len(data) - base
    out = {}
    spans = []
    for name, e in head.items():
        if name == "__metadata__":
            continue
        dt, shape, offs = e.get("dtype"), e.get("shape"), e.get("data_offsets")
        if dt not in ITEMSIZE:
            HEADER_PROBLEMS.append((fn, name, f"unknown dtype {dt!r}"))
            continue
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)) or \
                not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)):
            HEADER_PROBLEMS.append((fn, name, f"bad shape/data_offsets {shape!r} {offs!r}"))
            continue
        a, b = offs
        if not 0 <= a <= b <= size:
            HEADER_PROBLEMS.append((fn, name, f"data_offsets {offs} outside the {size}-byte data"))
            continue
        if b - a != math.prod(shape) * ITEMSIZE[dt]:
            HEADER_PROBLEMS.append((fn, name, f"{b - a} bytes for {dt}{shape}"))
            continue
        if a % ITEMSIZE[dt]:
            MISALIGNED.append((fn, name, f"{dt} at data offset {a}"))
        spans.append((a, b, name))
        out[name] = Tensor(path, dt, shape, data[base + a:base + b], a)
    pos = 0
    for a, b, name in sorted(spans):
        if a != pos:
            HEADER_PROBLEMS.append((fn, name, f"starts at {a}, previous data ends at {pos} (hole or overlap)"))
        pos = max(pos, b)
    if spans and pos != size:
        HEADER_PROBLEMS.append((fn, "", f"tensors end at {pos}, the data is {size} bytes"))
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


def note(diag):
    """A diagnostic printed whatever the verdicts."""
    results.append((None, None, diag))


# ---------------------------------------------------------------------------
# compressed-tensors 0.18.0: QuantizationArgs / QuantizationScheme validation
# (pydantic models with extra="forbid"; strict JSON types here, where pydantic's
# lax mode would also coerce e.g. "4" to 4)
# ---------------------------------------------------------------------------
QARGS_FIELDS = ["num_bits", "type", "symmetric", "group_size", "strategy", "block_structure",
                "dynamic", "actorder", "scale_dtype", "zp_dtype", "observer", "observer_kwargs"]
STRATEGIES = ["tensor", "channel", "group", "block", "token", "tensor_group", "attn_head"]
ACTORDER = {"group": "group", "weight": "weight", "dynamic": "group", "static": "weight"}
TORCH_DTYPES = {"float32", "float", "float64", "double", "float16", "half", "bfloat16", "int8", "uint8",
                "int16", "short", "int32", "int", "int64", "long", "uint16", "uint32", "uint64", "bool",
                "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
                "float4_e2m1fn_x2", "complex64", "complex128"}
SCHEME_FIELDS = ["targets", "weights", "input_activations", "output_activations", "format"]
FORMATS = ["dense", "sparse-bitmask", "sparse-24-bitmask", "int-quantized", "float-quantized",
           "naive-quantized", "pack-quantized", "marlin-24", "mixed-precision", "nvfp4-pack-quantized",
           "mxfp4-pack-quantized", "mxfp8-quantized"]
STATUSES = ["initialized", "calibration", "frozen", "compressed", "decompressed"]
CT_VERSION = "0.18.0"  # vllm-project/compressed-tensors HEAD = tag 0.18.0 (2026-08-06)


class QArgs:
    pass


def _isint(v):
    return isinstance(v, int) and not isinstance(v, bool)


def validate_qargs(d, where):
    """(QArgs or None, [errors]) as QuantizationArgs.model_validate(d) would."""
    if not isinstance(d, dict):
        return None, [f"{where} is {type(d).__name__}, not an object"]
    errs = [f"{where}: extra field {k!r} not permitted" for k in d if k not in QARGS_FIELDS]
    a = QArgs()
    a.num_bits, a.type, a.symmetric, a.group_size, a.strategy = 8, "int", True, None, None
    a.block_structure, a.dynamic, a.actorder, a.scale_dtype, a.zp_dtype = None, False, None, None, None
    a.observer, a.observer_kwargs = None, {}
    v = d.get("num_bits", 8)
    if _isint(v):
        a.num_bits = v
    else:
        errs.append(f"{where}.num_bits={v!r} is not an int")
    v = d.get("type", "int")
    if isinstance(v, str) and v.lower() in ("int", "float"):
        a.type = v.lower()
    else:
        errs.append(f"{where}.type={v!r} is not int or float")
    v = d.get("symmetric", True)
    if isinstance(v, bool):
        a.symmetric = v
    else:
        errs.append(f"{where}.symmetric={v!r} is not a bool")
    v = d.get("group_size")
    if v is None or (_isint(v) and v >= -1):
        a.group_size = v
    else:
        errs.append(f"{where}.group_size={v!r}: use group_size > 0 for group and -1 for channel")
    v = d.get("strategy")
    if v is None or (isinstance(v, str) and v.lower() in STRATEGIES):
        a.strategy = v.lower() if v is not None else None
    else:
        errs.append(f"{where}.strategy={v!r} is not one of {STRATEGIES}")
    v = d.get("block_structure")
    if isinstance(v, str):
        try:
            v = [int(x) for x in v.split("x")]
        except ValueError:
            v = "bad"
    if v is None or (isinstance(v, list) and len(v) == 2 and all(_isint(x) and x > 0 for x in v)):
        a.block_structure = v
    else:
        errs.append(f"{where}.block_structure={d.get('block_structure')!r} is not [rows, cols]")
    v = d.get("dynamic", False)
    if isinstance(v, bool) or (isinstance(v, str) and v.lower() == "local"):
        a.dynamic = v.lower() if isinstance(v, str) else v
    else:
        errs.append(f"{where}.dynamic={v!r} is not a bool or 'local'")
    v = d.get("actorder")
    if isinstance(v, bool):
        a.actorder = "group" if v else None
    elif v is None or (isinstance(v, str) and v.lower() in ACTORDER):
        a.actorder = ACTORDER[v.lower()] if v is not None else None
    else:
        errs.append(f"{where}.actorder={v!r} is not an ActivationOrdering")
    for k in ("scale_dtype", "zp_dtype"):
        v = d.get(k)
        if v is None or (isinstance(v, str) and v.removeprefix("torch.") in TORCH_DTYPES):
            setattr(a, k, v.removeprefix("torch.") if v is not None else None)
        else:
            errs.append(f"{where}.{k}={v!r} is not a torch dtype")
    v = d.get("observer")
    if v is None or isinstance(v, str):
        a.observer = v
    else:
        errs.append(f"{where}.observer={v!r} is not a string")
    v = d.get("observer_kwargs", {})
    if isinstance(v, dict):
        a.observer_kwargs = v
    else:
        errs.append(f"{where}.observer_kwargs={v!r} is not an object")
    if errs:
        return None, errs
    # validate_model_after
    s, g = a.strategy, a.group_size
    if s is None:
        if g is None:
            s = "tensor"
        elif g > 0:
            s = "group"
        elif g == -1:
            s = "channel"
        else:
            errs.append(f"{where}: group_size {g} infers no strategy")
    if s == "token" and not a.dynamic:
        errs.append(f"{where}: static token quantization (use dynamic=True)")
    if s in ("group", "tensor_group") and (g is None or g <= 0):
        errs.append(f"{where}: strategy {s} requires a positive group_size")
    if g is not None and g > 0 and s not in ("group", "tensor_group"):
        errs.append(f"{where}: group_size requires strategy group")
    if (s == "block") != (a.block_structure is not None):
        errs.append(f"{where}: block strategy and block_structure go together")
    if a.actorder == "group" and s not in ("group", "tensor_group"):
        errs.append(f"{where}: group activation ordering needs strategy group or tensor_group")
    if a.dynamic:
        if s not in ("token", "tensor", "tensor_group", "group"):
            errs.append(f"{where}: dynamic quantization with strategy {s}")
        if a.dynamic == "local" and s != "tensor_group":
            errs.append(f"{where}: dynamic 'local' needs strategy tensor_group")
        if a.dynamic is True:
            a.observer = None
        elif a.observer is None:
            a.observer = "minmax"
    elif a.observer is None:
        a.observer = "memoryless_minmax"
    a.strategy = s
    return (None if errs else a), errs


def validate_scheme(g, where):
    """(weights, input_activations, output_activations QArgs, [errors]) as
    QuantizationScheme.model_validate(g) would."""
    if not isinstance(g, dict):
        return None, None, None, [f"{where} is not an object"]
    errs = [f"{where}: extra field {k!r} not permitted" for k in g if k not in SCHEME_FIELDS]
    t = g.get("targets")
    if not (isinstance(t, list) and all(isinstance(x, str) for x in t)):
        errs.append(f"{where}.targets={t!r} is not a list of strings")
    parsed = []
    for k in ("weights", "input_activations", "output_activations"):
        if g.get(k) is None:
            parsed.append(None)
            continue
        q, e = validate_qargs(g[k], f"{where}.{k}")
        errs += e
        parsed.append(q)
    w, i, o = parsed
    f = g.get("format")
    if f is not None and f not in FORMATS:
        errs.append(f"{where}.format={f!r} is not a CompressionFormat")
    if f == "mixed-precision":
        errs.append(f"{where}.format mixed-precision is not allowed for a scheme")
    if i is not None:
        if i.strategy not in ("token", "tensor", "group", "tensor_group", "attn_head"):
            errs.append(f"{where}: {i.strategy} strategy is not supported for activations")
        if i.actorder is not None:
            errs.append(f"{where}: actorder on input activations")
    if o is not None and o.actorder is not None:
        errs.append(f"{where}: actorder on output activations")
    return w, i, o, errs


# ---------------------------------------------------------------------------
# vLLM: CompressedTensorsConfig._quantization_scheme_map_from_config and
# _get_scheme_from_parts for one config group (a GPU that is not SM90)
# ---------------------------------------------------------------------------
ACT_FORMATS = ("naive-quantized", "int-quantized", "float-quantized", "nvfp4-pack-quantized")
WNA16_BITS = (4, 8)      # WNA16_SUPPORTED_TYPES_MAP: uint4b8, uint8b128
WNA16_ZP_BITS = (4, 8)   # WNA16_ZP_SUPPORTED_TYPES_MAP: uint4, uint8
MARLIN_GROUP_SIZES = (-1, 32, 64, 128)
MARLIN_ZP_BITS = (4,)    # query_marlin_supported_quant_types(has_zp=True) -> [uint4]


class Refused(Exception):
    pass


def vllm_scheme(group, global_format):
    """The CompressedTensorsScheme vLLM builds for a layer of this group, as
    'Name (detail)'; raises Refused with the error vLLM would raise."""
    w, _, _, errs = validate_scheme(group, "group")
    if errs:
        raise Refused("pydantic ValidationError: " + "; ".join(errs))
    if w is None:
        return "UnquantizedLinearMethod (no weights args)"
    if w.actorder == "group":
        raise Refused("ValueError: group/dynamic activation ordering is no longer supported")
    gfmt = group.get("format")
    fmt = gfmt if gfmt is not None else global_format
    act_format = fmt in ACT_FORMATS
    ia, oa = group.get("input_activations"), group.get("output_activations")
    inp = out = None
    if act_format or ia:
        if not ia:
            if w.type != "float":
                raise Refused(f"AssertionError: format {fmt} quantizes activations, input_activations is "
                              f"null, so the weights must be float (they are {w.type})")
        else:
            inp, _ = validate_qargs(ia, "input_activations")
    if oa:
        out, _ = validate_qargs(oa, "output_activations")

    def nvfp4(q):
        return q is not None and q.strategy == "tensor_group" and q.symmetric and q.group_size == 16 \
            and q.type == "float" and q.num_bits == 4

    if nvfp4(w):
        if inp is None:
            return "CompressedTensorsW4A4Fp4 (A16)"
        if not nvfp4(inp):
            raise Refused("ValueError: NVFP4 weights need NVFP4 or no input quantization")
        return "CompressedTensorsW4A4Fp4"
    if w.strategy == "group" and w.symmetric and w.group_size == 32 and w.type == "float":
        if w.num_bits == 4:
            return "CompressedTensorsW4A4Mxfp4"
        if w.num_bits == 8 and w.scale_dtype == "uint8":
            return "CompressedTensorsW8A8Mxfp8"
    if inp is not None and w.num_bits == 4 and inp.num_bits == 8 and w.strategy == "group" and \
            inp.strategy == "token" and not w.dynamic and inp.dynamic and w.symmetric and inp.symmetric:
        return "CompressedTensorsW4A8Fp8 (on SM90; elsewhere the checks go on)"
    int_static_cg = w.type == "int" and not w.dynamic and w.strategy in ("channel", "group")

    def static_int8_tensor(q):
        return q is not None and q.type == "int" and q.strategy == "tensor" and q.num_bits == 8 \
            and not q.dynamic

    if int_static_cg and fmt in ("pack-quantized", "int-quantized") and static_int8_tensor(inp) \
            and static_int8_tensor(out):
        return "CompressedTensorsWNA8O8Int"
    if inp is not None and fmt == "pack-quantized" and int_static_cg and inp.type == "int" and \
            inp.symmetric and inp.dynamic and inp.strategy in ("token", "group") and inp.num_bits in (8, 4):
        return f"CompressedTensorsWNA{inp.num_bits}Int (Humming)"
    if w.strategy in ("channel", "group") and inp is None and not w.dynamic and fmt == "pack-quantized":
        gs = -1 if w.group_size is None else w.group_size
        if gs == -1 and w.strategy != "channel":
            raise Refused("ValueError: pack-quantized needs group or channel quantization")
        if w.num_bits not in WNA16_BITS:
            raise Refused(f"ValueError: Unsupported num_bits = {w.num_bits}")
        if not w.symmetric and w.num_bits not in WNA16_ZP_BITS:
            raise Refused(f"ValueError: asymmetric quantization not supported for num_bits = {w.num_bits}")
        return f"CompressedTensorsWNA16 ({w.num_bits}-bit, {w.strategy}, " \
               f"{'symmetric' if w.symmetric else 'zero points'})"
    if act_format:
        if inp is not None and w.type == "float" and inp.type == "float" and w.symmetric and \
                not w.dynamic and w.strategy in ("tensor", "channel", "block") and \
                (inp.dynamic or (inp.symmetric and inp.strategy == "tensor")):
            return "CompressedTensorsW8A8Fp8"
        if w.type == "float" and w.symmetric and not w.dynamic and w.strategy in ("tensor", "channel", "block"):
            return "CompressedTensorsW8A16Fp8"
        if inp is not None:
            tc = w.strategy in ("tensor", "channel")
            if w.num_bits == inp.num_bits == 8 and tc and inp.strategy == "tensor" and \
                    not w.dynamic and not inp.dynamic and w.symmetric:
                return "CompressedTensorsW8A8Int8 (static per-tensor input)"
            if w.num_bits == inp.num_bits == 8 and tc and inp.strategy == "token" and \
                    not w.dynamic and inp.dynamic and w.symmetric:
                return "CompressedTensorsW8A8Int8 (dynamic per-token)"
            if w.num_bits == 4 and inp.num_bits == 8 and w.strategy in ("group", "channel") and \
                    inp.strategy == "token" and not w.dynamic and inp.dynamic and w.symmetric:
                return "CompressedTensorsW4A8Int"
    raise Refused(f"NotImplementedError: No compressed-tensors compatible scheme was found (format={fmt})")


def ignore_matcher(ignore):
    """vLLM's should_ignore_layer for one (unfused) layer name: an exact name, or
    're:' + a regex matched from the start.  Exact names are mapped to vLLM's
    names with the weights; a regex is not, so it must also match the name
    without its leading 'model.' (e.g. Qwen2.5-VL's visual.*)."""
    pats = [p for p in ignore if isinstance(p, str)]

    def hits(name, both):
        """Whether a pattern hits name: with both, a regex must match the name
        and its short form (vLLM's rule); else either."""
        short = name[len("model."):] if name.startswith("model.") else name
        for p in pats:
            if p.startswith("re:"):
                try:
                    rx = re.compile(p[3:])
                except re.error:
                    continue
                if (rx.match(name) and rx.match(short)) if both else (rx.match(name) or rx.match(short)):
                    return True
            elif p == name or (not both and p == short):
                return True
        return False

    def match(name):
        return hits(name, True)

    def touches(name):
        return hits(name, False)

    return match, touches


def ignore_problems(qc, orig, lin_names):
    ignore = qc.get("ignore") or []
    if not isinstance(ignore, list):
        return [f"ignore={ignore!r} is not a list"]
    match, touches = ignore_matcher(ignore)
    probs = [] if "lm_head" in ignore else ["ignore lacks 'lm_head'"]
    lin_mods = {n[:-len(".weight")] for n in lin_names}
    others = sorted(n[:-len(".weight")] for n, t in orig.items()
                    if n.endswith(".weight") and len(t.shape) == 2 and n[:-len(".weight")] not in lin_mods
                    and "embed_tokens" not in n)
    probs += [f"{m} (a Linear outside the decoder) is not ignored" for m in others if not match(m)]
    probs += [f"decoder linear {m} is ignored" for m in sorted(lin_mods) if touches(m)]
    return probs


# ---------------------------------------------------------------------------
# numerics
# ---------------------------------------------------------------------------
def f32_to_bf16_bits(x):
    """float32 -> BF16 bit patterns, round to nearest even (finite inputs)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def round_scale(scale, dtype):
    """(bit patterns as stored, value as float32) of a float32 scale in dtype."""
    if dtype == "BF16":
        b = f32_to_bf16_bits(scale)
        return b, (b.astype(np.uint32) << 16).view(np.float32)
    if dtype == "F16":
        h = scale.astype(np.float16)
        return h.view(np.uint16), h.astype(np.float32)
    if dtype == "F32":
        return scale.view(np.uint32), scale
    raise ValueError(dtype)


UNIT_ROUNDOFF = {"BF16": 2.0 ** -8, "F16": 2.0 ** -11, "F32": 2.0 ** -24}


def reference_quant(X, bits, symmetric, g):
    """MASQuant's reference quantizer (masquant-brief.md section 4) in float32
    on groups of g consecutive input columns of each row (g = in: per output
    channel).  Returns (scale [out, G], zero [out, G] or None, level [out, in],
    clipped [out, in]) with levels and zeros as float32 integers."""
    out, inn = X.shape
    G = inn // g
    Xg = X.reshape(out, G, g)
    lo, hi = np.float32(1e-5), np.float32(1e4)
    if symmetric:
        qmax = np.float32(2 ** (bits - 1) - 1)
        amax = np.max(np.abs(Xg), axis=2)
        scale = np.clip(amax / qmax, lo, hi).astype(np.float32)
        r = np.rint(Xg / scale[..., None])
        level = np.clip(r, -qmax, qmax)
        zero = None
    else:
        top = np.float32(2 ** bits - 1)
        mn, mx = Xg.min(axis=2), Xg.max(axis=2)
        scale = np.clip((mx - mn) / top, lo, hi).astype(np.float32)
        zero = np.clip(np.rint(-mn / scale), np.float32(-1e4), np.float32(1e4)).astype(np.float32)
        r = np.rint(Xg / scale[..., None]) + zero[..., None]
        level = np.clip(r, np.float32(0), top)
    clipped = (r != level).reshape(out, inn)
    return scale, zero, level.reshape(out, inn).astype(np.float32), clipped


def unpack_from_int32(value, bits, length, packed_dim=1):
    """compressed-tensors' unpack_from_int32 (0.18.0; for 4 and 8 bits the same
    layout as 0.12's): along packed_dim, runs of 32 values are stored densely in
    `bits` int32 words, value i of a run at bit i*bits counted from the least
    significant bit of the run's first word (for bits dividing 32: value j of
    word k is bits [j*bits, (j+1)*bits) of word k, column k*32/bits + j).  The
    words are cut to `length` values and 2^(bits-1) is subtracted, giving the
    signed values.  Returns (signed int64 values, number of nonzero padding
    bits per row/column): the bits past length*bits in the last stored word."""
    v = np.asarray(value, dtype=np.int32)
    if packed_dim == 0:
        v = v.T
    rows, words = v.shape
    u = v.view(np.uint32).astype(np.uint64)
    need = math.ceil(length * bits / 32)
    if words < need:
        raise ValueError(f"{words} words hold fewer than {length} {bits}-bit values")
    mask = (1 << bits) - 1
    out = np.empty((rows, length), dtype=np.int64)
    if 32 % bits == 0:
        # the same positions, a word at a time: value j of word k is column k*pf + j
        pf = 32 // bits
        full = np.empty((rows, words * pf), dtype=np.int64)
        for j in range(pf):
            full[:, j::pf] = ((u >> np.uint64(j * bits)) & np.uint64(mask)).astype(np.int64)
        out[:] = full[:, :length]
    for i in (range(length) if 32 % bits else ()):
        start = i * bits
        w, off = start // 32, start % 32
        lo = min(32 - off, bits)
        x = (u[:, w] >> np.uint64(off)) & np.uint64((1 << lo) - 1)
        if lo < bits:
            x |= (u[:, w + 1] & np.uint64((1 << (bits - lo)) - 1)) << np.uint64(lo)
        out[:, i] = x.astype(np.int64)
    extra = words * 32 - length * bits
    if extra >= 32:   # whole words beyond the data
        padbits = (u[:, need:] != 0).sum(axis=1).astype(np.int64) * 32
        extra -= (words - need) * 32
    else:
        padbits = np.zeros(rows, np.int64)
    if extra > 0:
        padbits += (u[:, need - 1] >> np.uint64(32 - extra)) != 0
    signed = (out & mask) - (1 << (bits - 1))
    if packed_dim == 0:
        signed = signed.T
    return signed, padbits


def unpack(value, bits, length, packed_dim=1):
    return unpack_from_int32(value, bits, length, packed_dim)


def fold_factors(orig, exp, prefix, layer, lin, n_in):
    """(s float32 [in], known bool [in], problem or None): the factor folded
    into this linear's input columns, orig_norm / exported_norm in float32."""
    if FOLD[lin] is None:
        return np.ones(n_in, np.float32), np.ones(n_in, bool), None
    nn = prefix + layer + "." + FOLD[lin] + ".weight"
    if nn not in orig or nn not in exp or exp[nn].shape != [n_in] or orig[nn].shape != [n_in]:
        return None, None, f"{nn} missing or not [{n_in}]"
    on, en = orig[nn].array().astype(np.float32), exp[nn].array().astype(np.float32)
    known = (on != 0) & (en != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(known, on / np.where(known, en, np.float32(1)), np.float32(1)).astype(np.float32)
    if not np.all(np.isfinite(s[known])) or not np.all(s[known] > 0):
        return None, None, f"{nn}: orig / new is not positive and finite"
    return s, known, None


def main():
    if len(sys.argv) != 3:
        print("usage: ct_check.py ORIG_DIR EXPORT_DIR", file=sys.stderr)
        return 2
    orig_dir, exp_dir = sys.argv[1], sys.argv[2]
    orig, _, _ = read_dir(orig_dir)
    exp, index, files = read_dir(exp_dir)
    with open(os.path.join(orig_dir, "config.json")) as f:
        ocfg = json.load(f)
    with open(os.path.join(exp_dir, "config.json")) as f:
        cfg = json.load(f)
    qc = cfg.pop("quantization_config", None)
    qc = qc if isinstance(qc, dict) else {}
    fmt = qc.get("format")
    groups = qc.get("config_groups") if isinstance(qc.get("config_groups"), dict) else {}
    g = groups.get("group_0") if isinstance(groups.get("group_0"), dict) else {}
    pack = fmt == "pack-quantized"

    check("every tensor's offset is aligned to its element size", not MISALIGNED,
          "; ".join(f"{f}: {n}: {p}" for f, n, p in MISALIGNED[:5]))
    check("every safetensors header is well formed (known dtypes, sizes match shapes, no holes)",
          not HEADER_PROBLEMS, "; ".join(f"{f}: {n}: {p}" for f, n, p in HEADER_PROBLEMS[:5]))

    prefix = next((p for p in PREFIXES if p + "0.input_layernorm.weight" in orig), None)
    if prefix is None:
        # other layouts (Idefics3's model.text_model., MiniCPM-V's llm.model.):
        # wherever a single layers.0.input_layernorm.weight is
        found = [n[:-len("0.input_layernorm.weight")] for n in orig
                 if n.endswith("layers.0.input_layernorm.weight")]
        prefix = found[0] if len(found) == 1 else None
    check("the original has decoder layers", prefix is not None)
    prefix = prefix or ""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.(" + "|".join(re.escape(x) for x in LINEARS) + r")\.weight$")
    lin_names = sorted(n for n in orig if pat.match(n))
    check("the original has decoder linears", len(lin_names) > 0, f"prefix {prefix!r}")
    norm_re = re.compile(re.escape(prefix) + r"\d+\.(input_layernorm|post_attention_layernorm)\.weight$")

    if pack:
        pack_checks(orig, exp, index, exp_dir, cfg, ocfg, qc, g, groups, prefix, pat, lin_names, norm_re)
    else:
        int_checks(orig, exp, index, exp_dir, cfg, ocfg, qc, g, groups, prefix, pat, lin_names, norm_re)

    for ok, name, diag in results:
        if ok is None:
            print("# " + diag)
            continue
        print(("ok - " if ok else "not ok - ") + name)
        if not ok and diag:
            print("# " + diag)
    return 0 if all(r[0] for r in results if r[0] is not None) else 1


def copies_and_index(orig, exp, index, exp_dir, replaced, norm_re):
    """every other tensor keeps dtype/shape, bytes but for the norms; the index."""
    changed, redtyped = [], []
    for n, t in orig.items():
        if n in replaced or n not in exp:
            continue
        e = exp[n]
        if e.dtype != t.dtype or e.shape != t.shape:
            redtyped.append(f"{n}: {t.dtype}{t.shape} -> {e.dtype}{e.shape}")
        elif not norm_re.match(n) and e.raw != t.raw:
            changed.append(n)
    check("every other tensor keeps its dtype and shape", not redtyped, "; ".join(redtyped[:5]))
    check("tensors other than decoder linears and norms are copied byte for byte", not changed,
          ", ".join(changed[:5]))

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
              f"files {sorted(set(wm.values()))} vs {present}, total_size "
              f"{index.get('metadata', {}).get('total_size')!r}")


def scheme_checks(qc, g, groups, want, lin_names, orig):
    """QuantizationArgs/Scheme validation, vLLM's scheme, the ignore list."""
    errs = []
    if not groups:
        errs.append("no config_groups")
    for name, grp in groups.items():
        errs += validate_scheme(grp, f"config_groups.{name}")[3]
    kv = qc.get("kv_cache_scheme")
    if kv is not None:
        errs += validate_qargs(kv, "kv_cache_scheme")[1]
    st = qc.get("quantization_status", "initialized")
    if st not in STATUSES:
        errs.append(f"quantization_status={st!r}")
    check(f"QuantizationArgs and QuantizationScheme accept every config group "
          f"(compressed-tensors {CT_VERSION} validators)", not errs, "; ".join(errs[:5]))
    w = g.get("weights") if isinstance(g.get("weights"), dict) else {}
    newer = [k for k in ("scale_dtype", "zp_dtype") if k in w]
    if newer:
        note(f"weights carry {', '.join(newer)}: QuantizationArgs has them from compressed-tensors 0.13.0 on; "
             f"0.12.x and older (pinned by vLLM releases before it moved to 0.13.0) forbid them as extra fields")
    try:
        got = vllm_scheme(g, qc.get("format"))
    except Refused as e:
        got = "refused: " + str(e)
    check(f"vLLM picks {want} for the decoder linears (group format, else top-level format)",
          got.startswith(want), f"vLLM: {got}")
    probs = ignore_problems(qc, orig, lin_names)
    check("ignore covers lm_head and every Linear outside the decoder (vision/audio towers), no decoder linear",
          not probs, "; ".join(probs[:5]))


def int_checks(orig, exp, index, exp_dir, cfg, ocfg, qc, g, groups, prefix, pat, lin_names, norm_re):
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

    # 4. everything else keeps its name, dtype and shape; bytes unchanged but for the norms; 5. the index
    copies_and_index(orig, exp, index, exp_dir, set(lin_names), norm_re)

    # 6. config.json
    check("config.json is unchanged but for quantization_config", cfg == ocfg)
    w = g.get("weights") if isinstance(g.get("weights"), dict) else {}
    a = g.get("input_activations") if isinstance(g.get("input_activations"), dict) else {}
    problems = []
    for k, v in [("quant_method", "compressed-tensors"), ("format", "int-quantized")]:
        if qc.get(k) != v:
            problems.append(f"{k}={qc.get(k)!r}")
    if g.get("format") not in (None, "int-quantized"):
        problems.append(f"group_0.format={g.get('format')!r}")
    if len(groups) != 1 or g.get("targets") != ["Linear"]:
        problems.append(f"config_groups {sorted(groups)}, targets={g.get('targets')!r}")
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
    scheme_checks(qc, g, groups, "CompressedTensorsW8A8Int8 (dynamic per-token)", lin_names, orig)
    if qc.get("version") != CT_VERSION:
        note(f"version {qc.get('version')!r}; compressed-tensors {CT_VERSION} writes {CT_VERSION!r}")

    # 7. numerics: weight * weight_scale reproduces W diag(s) within scale / 2,
    # s recovered per input channel from the norms as orig_norm / new_norm
    worst, nbad, ncols_skipped, bad_scale, bad_lvl, bad_fold = 0.0, 0, 0, [], [], []
    for n in lin_names:
        if n not in exp or n + "_scale" not in exp or exp[n].dtype != "I8" or \
                exp[n].shape != orig[n].shape or exp[n + "_scale"].shape != [orig[n].shape[0], 1] or \
                exp[n + "_scale"].dtype != "F32":
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


def pack_checks(orig, exp, index, exp_dir, cfg, ocfg, qc, g, groups, prefix, pat, lin_names, norm_re):
    w_raw = g.get("weights") if isinstance(g.get("weights"), dict) else {}
    wq, _ = validate_qargs(w_raw, "weights")
    # what the tensors are checked against: the config's own numbers when they parse
    bits = w_raw.get("num_bits") if _isint(w_raw.get("num_bits")) else 4
    sym = w_raw.get("symmetric") if isinstance(w_raw.get("symmetric"), bool) else True
    strategy = wq.strategy if wq is not None else w_raw.get("strategy")
    gsize = w_raw.get("group_size") if strategy == "group" and _isint(w_raw.get("group_size")) else None
    packable = 1 <= bits <= 8
    if not packable:
        bits = 4

    # 1. the compressed-tensors parameters of every decoder linear, as vLLM's create_weights makes them
    bad, bad_zp, left, geo = [], [], [], {}
    for n in lin_names:
        P = n[:-len(".weight")]
        out, inn = orig[n].shape
        wdt = orig[n].dtype
        ngroups = 1 if strategy != "group" else (inn // gsize if gsize and inn % gsize == 0 else None)
        geo[n] = (out, inn, ngroups)
        t = exp.get(P + ".weight_packed")
        want = [out, math.ceil(inn * bits / 32)]
        if t is None or t.dtype != "I32" or t.shape != want:
            bad.append(f"{P}.weight_packed: {None if t is None else (t.dtype, t.shape)}, want I32 {want}")
        t = exp.get(P + ".weight_scale")
        if ngroups is None:
            bad.append(f"{P}: group_size {gsize} does not divide in = {inn}")
        elif t is None or t.dtype != wdt or t.shape != [out, ngroups]:
            bad.append(f"{P}.weight_scale: {None if t is None else (t.dtype, t.shape)}, want {wdt} {[out, ngroups]}")
        t = exp.get(P + ".weight_shape")
        if t is None or t.dtype != "I64" or t.shape != [2] or list(t.array()) != [out, inn]:
            bad.append(f"{P}.weight_shape: {None if t is None else (t.dtype, t.shape, list(t.array()) if t.dtype == 'I64' and t.shape == [2] else '')}, want I64 [2] = [{out}, {inn}]")
        t = exp.get(P + ".weight_zero_point")
        if sym:
            if t is not None:
                bad_zp.append(f"{P}.weight_zero_point present although symmetric")
        else:
            want = [math.ceil(out * bits / 32), ngroups]
            if t is None or t.dtype != "I32" or t.shape != want:
                bad_zp.append(f"{P}.weight_zero_point: {None if t is None else (t.dtype, t.shape)}, want I32 {want}")
        if n in exp:
            left.append(n)
    wdts = sorted({orig[n].dtype for n in lin_names})
    check(f"every decoder linear ({len(lin_names)}) has weight_packed I32 [out, in*{bits}/32], weight_scale "
          f"{'/'.join(wdts)} [out, {'in/' + str(gsize or 'group_size') if strategy == 'group' else '1'}], "
          f"weight_shape I64 [2] = [out, in]", not bad, "; ".join(bad[:5]))
    check("weight_zero_point I32 [out*%d/32, groups] exactly when asymmetric (%s)"
          % (bits, "symmetric: none" if sym else "asymmetric"), not bad_zp, "; ".join(bad_zp[:5]))
    check("no decoder linear keeps its float weight", not left, ", ".join(left[:5]))

    # 2. the names
    params = ["weight_packed", "weight_scale", "weight_shape"] + ([] if sym else ["weight_zero_point"])
    allowed = (set(orig) - set(lin_names)) | {n[:-len("weight")] + p for n in lin_names for p in params}
    unknown = sorted(set(exp) - allowed)
    missing = sorted((set(orig) - set(lin_names)) - set(exp))
    check("no tensor outside the original names but the compressed-tensors parameters vLLM creates",
          not unknown, ", ".join(unknown[:5]))
    check("no original tensor is missing", not missing, ", ".join(missing[:5]))

    # 3. copies and the index
    copies_and_index(orig, exp, index, exp_dir, set(lin_names), norm_re)

    # 4. config.json and quantization_config
    check("config.json is unchanged but for quantization_config", cfg == ocfg)
    problems = []
    for k, v in [("quant_method", "compressed-tensors"), ("format", "pack-quantized"),
                 ("quantization_status", "compressed")]:
        if qc.get(k) != v:
            problems.append(f"{k}={qc.get(k)!r}")
    if not isinstance(qc.get("version"), str) or not re.match(r"^\d+\.\d+", qc.get("version", "")):
        problems.append(f"version={qc.get('version')!r}")
    if len(groups) != 1 or "group_0" not in groups:
        problems.append(f"config_groups {sorted(groups)}, want one group_0")
    if g.get("targets") != ["Linear"]:
        problems.append(f"targets={g.get('targets')!r}")
    if g.get("format") not in (None, "pack-quantized"):
        problems.append(f"group_0.format={g.get('format')!r}")
    for k in ("input_activations", "output_activations"):
        if g.get(k) is not None:
            problems.append(f"{k}={g.get(k)!r}, want null")
    for k, ok in [("num_bits", bits in (4, 8) and w_raw.get("num_bits") == bits),
                  ("type", w_raw.get("type") == "int"), ("symmetric", isinstance(w_raw.get("symmetric"), bool)),
                  ("strategy", w_raw.get("strategy") in ("group", "channel")),
                  ("dynamic", w_raw.get("dynamic") is False),
                  ("actorder", w_raw.get("actorder") is None)]:
        if not ok:
            problems.append(f"weights.{k}={w_raw.get(k)!r}")
    if w_raw.get("strategy") == "channel" and w_raw.get("group_size") not in (None, -1):
        problems.append(f"weights.group_size={w_raw.get('group_size')!r} with strategy channel")
    if w_raw.get("strategy") == "group" and not (_isint(w_raw.get("group_size")) and w_raw["group_size"] > 0):
        problems.append(f"weights.group_size={w_raw.get('group_size')!r} with strategy group")
    for k in ("kv_cache_scheme", "sparsity_config", "transform_config"):
        if qc.get(k):
            problems.append(f"{k}={qc.get(k)!r}")
    check("quantization_config: compressed-tensors pack-quantized, compressed, one group targeting Linear, "
          "int weights group|channel static, input_activations null", not problems, "; ".join(problems[:6]))
    if isinstance(qc.get("version"), str) and qc.get("version") != CT_VERSION:
        note(f"version {qc.get('version')!r}; compressed-tensors {CT_VERSION} writes {CT_VERSION!r}")
    scheme_checks(qc, g, groups, "CompressedTensorsWNA16", lin_names, orig)
    kern = []
    if bits not in WNA16_BITS:
        kern.append(f"num_bits {bits}")
    if not sym and bits not in MARLIN_ZP_BITS:
        kern.append(f"zero points with {bits} bits (Marlin takes uint4 only; Machete uint8 on SM90 only)")
    check("num_bits is 4 or 8, and zero points only with 4 bits (WNA16 types; Marlin's zero-point type uint4)",
          not kern, "; ".join(kern))
    gp = []
    gs = -1 if strategy == "channel" else gsize
    if strategy == "group":
        if gs not in MARLIN_GROUP_SIZES:
            gp.append(f"group_size {w_raw.get('group_size')!r} not in Marlin's {MARLIN_GROUP_SIZES[1:]}")
        gp += [f"{n[:-len('.weight')]}: in = {geo[n][1]}" for n in lin_names if gs and geo[n][1] % gs]
    elif strategy != "channel":
        gp.append(f"strategy {strategy!r}")
    check("group_size is 32, 64 or 128 (Marlin) and divides in of every decoder linear, or channel",
          not gp, "; ".join(gp[:5]))
    if strategy in ("group", "channel"):
        odd = [n[:-len(".weight")] for n in lin_names if geo[n][0] % 64 or geo[n][1] % 128]
        if odd:
            note(f"{len(odd)} linears are not multiples of Marlin's 64 x 128 tile (out % 64, in % 128), e.g. "
                 f"{odd[0]}: vLLM pads them (2026), older vLLM refuse them")

    # 5. numerics, exactly
    ok_fold, repr_bad, nexcl = [], [], 0
    lvl_bad, zp_bad, pad_bad, sc_bad, deq_bad, loose_bad = [], [], [], [], [], []
    worst, nloose = 0.0, 0
    sizes = {"weight_packed": 0, "weight_scale": 0, "weight_zero_point": 0, "weight_shape": 0}
    for k in sizes:
        sizes[k] = sum(len(t.raw) for n, t in exp.items() if n.endswith("." + k))
    for n in lin_names:
        P = n[:-len(".weight")]
        out, inn, ngroups = geo[n]
        tp, ts, tz = exp.get(P + ".weight_packed"), exp.get(P + ".weight_scale"), exp.get(P + ".weight_zero_point")
        if not packable or ngroups is None or tp is None or tp.dtype != "I32" or \
                tp.shape != [out, math.ceil(inn * bits / 32)] or ts is None or ts.shape != [out, ngroups] or \
                ts.dtype not in ("BF16", "F16", "F32") or ts.dtype != orig[n].dtype:
            lvl_bad.append(f"{P}: parameters missing or malformed")
            continue
        if not sym and (tz is None or tz.dtype != "I32" or tz.shape != [math.ceil(out * bits / 32), ngroups]):
            zp_bad.append(f"{P}: weight_zero_point missing or malformed")
            continue
        m = pat.match(n)
        layer, lin = m.group(1), m.group(2)
        s, known, prob = fold_factors(orig, exp, prefix, layer, lin, inn)
        if prob:
            ok_fold.append(prob)
            continue
        g_ = inn // ngroups
        W = orig[n].array().astype(np.float32)
        X = (W * s[None, :]).astype(np.float32)
        scale, zero, level, clipped = reference_quant(X, bits, sym, g_)
        gknown = np.broadcast_to(known.reshape(ngroups, g_).all(axis=1)[None, :], (out, ngroups))
        if not gknown.all():
            nexcl += int((~gknown).sum())
        top = 2 ** bits - 1
        rep = np.ones((out, ngroups), bool) if sym else (zero >= 0) & (zero <= top)
        bad_rep = gknown & ~rep
        if bad_rep.any():
            r, c = np.argwhere(bad_rep)[0]
            repr_bad.append(f"{P}: {int(bad_rep.sum())} groups, e.g. row {r} group {c} zero {zero[r, c]:g}")
        use = gknown & rep                              # [out, G]
        use_el = np.repeat(use, g_, axis=1)             # [out, in]

        # the export, decoded as compressed-tensors decodes it
        v, pad = unpack(tp.array(), bits, inn, packed_dim=1)
        off = 1 << (bits - 1)
        want_v = level.astype(np.int64) - (0 if sym else off)
        d = use_el & (v != want_v)
        if d.any():
            r, c = np.argwhere(d)[0]
            lvl_bad.append(f"{P}: {int(d.sum())} levels, e.g. [{r}, {c}] = {v[r, c]}, want {want_v[r, c]}")
        if pad.any():
            pad_bad.append(f"{P}.weight_packed: {int(pad.sum())} nonzero padding bits")
        if sym:
            zp = np.zeros((out, ngroups), np.int64)
            want_zp = zp
        else:
            zp, zpad = unpack(tz.array(), bits, out, packed_dim=0)
            want_zp = zero.astype(np.int64) - off
            dz = use & (zp != want_zp)
            if dz.any():
                r, c = np.argwhere(dz)[0]
                zp_bad.append(f"{P}: {int(dz.sum())} zero points, e.g. [{r}, {c}] = {zp[r, c]}, want {want_zp[r, c]}")
            if zpad.any():
                pad_bad.append(f"{P}.weight_zero_point: {int(zpad.sum())} nonzero padding bits")
        want_bits, want_sc = round_scale(scale, ts.dtype)
        got_bits = ts.bits16() if ts.dtype in ("BF16", "F16") else ts.array().view(np.uint32)
        ds = gknown & (got_bits != want_bits)
        if ds.any():
            r, c = np.argwhere(ds)[0]
            sc_bad.append(f"{P}: {int(ds.sum())} scales, e.g. [{r}, {c}] = {ts.array()[r, c]!r}, "
                          f"want {want_sc[r, c]!r} (float32 {scale[r, c]!r})")
        st = ts.array().astype(np.float32)
        st_el = np.repeat(st, g_, axis=1)
        zp_el = np.repeat(zp, g_, axis=1)
        ct_deq = (v - zp_el).astype(np.float32) * st_el
        lz = level - (0 if sym else np.repeat(zero, g_, axis=1))
        mq_deq = lz.astype(np.float32) * np.repeat(want_sc, g_, axis=1)
        dd = use_el & (ct_deq != mq_deq)
        if dd.any():
            r, c = np.argwhere(dd)[0]
            deq_bad.append(f"{P}: {int(dd.sum())} elements, e.g. [{r}, {c}] {ct_deq[r, c]!r} vs {mq_deq[r, c]!r}")
        # loose: within half a step of X, plus what rounding the scale to its dtype moves
        u = UNIT_ROUNDOFF[ts.dtype]
        q = np.abs(v - zp_el).astype(np.float64)
        lim = (st_el / 2 + q * st_el * u) * (1 + u) * (1 + 1e-6) + 1e-30
        inside = np.repeat(gknown, g_, axis=1) & ~clipped
        err = np.abs(ct_deq.astype(np.float64) - X.astype(np.float64))
        over = inside & (err > lim)
        if over.any():
            r, c = np.argwhere(over)[0]
            loose_bad.append(f"{P}: {int(over.sum())} elements, e.g. [{r}, {c}] err {err[r, c]:g} > {lim[r, c]:g}")
        if inside.any():
            worst = max(worst, float((err / (st_el / 2))[inside].max()))
        nloose += int(inside.sum())

    excl = f", {nexcl} groups with a zero norm value excluded" if nexcl else ""
    if nexcl:
        note(f"{nexcl} (row, group) blocks touch a column whose norm is 0 in the original or the export: "
             f"factor unknown, excluded from the exact comparison")
    check("the norms carry positive finite factors (orig / new)", not ok_fold, "; ".join(ok_fold[:5]))
    check(f"every reference zero point lies in [0, {2 ** bits - 1}] (representable in {bits} bits)",
          not repr_bad, "; ".join(repr_bad[:5]))
    check(f"weight_packed unpacks (LSB first, minus {1 << (bits - 1)}) to MASQuant's reference levels exactly{excl}",
          not lvl_bad, "; ".join(lvl_bad[:5]))
    check(f"weight_zero_point unpacks (packed along out, minus {1 << (bits - 1)}) to the reference zero points "
          f"exactly{' (symmetric: none)' if sym else ''}", not zp_bad, "; ".join(zp_bad[:5]))
    check("the padding bits of weight_packed and weight_zero_point are zero", not pad_bad, "; ".join(pad_bad[:5]))
    check(f"weight_scale is the float32 reference scale rounded to {'/'.join(wdts)} exactly",
          not sc_bad, "; ".join(sc_bad[:5]))
    check("compressed-tensors' (value - zero_point) * scale equals MASQuant's (level - zero) * scale exactly",
          not deq_bad, "; ".join(deq_bad[:5]))
    check("the dequantized weight is within scale / 2 of W diag(s) inside the clamp range (worst %.4f of "
          "scale / 2, %d elements)" % (worst, nloose), not loose_bad, "; ".join(loose_bad[:5]))

    ob = sum(len(t.raw) for t in orig.values())
    eb = sum(len(t.raw) for t in exp.values())
    lb = sum(len(orig[n].raw) for n in lin_names)
    note("sizes: weight_packed %d B, weight_scale %d B, weight_zero_point %d B, weight_shape %d B "
         "(decoder linears %d B before); tensors %d B exported / %d B original = %.4f"
         % (sizes["weight_packed"], sizes["weight_scale"], sizes["weight_zero_point"], sizes["weight_shape"],
            lb, eb, ob, eb / ob if ob else float("nan")))


if __name__ == "__main__":
    sys.exit(main())
