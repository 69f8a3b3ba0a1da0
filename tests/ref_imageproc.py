#!/usr/bin/python3
"""Independent oracle for Qwen2.5-VL image preprocessing (transformers' SLOW Qwen2VLImageProcessor).

usage: /usr/bin/python3 ref_imageproc.py --config PREPROCESSOR_CONFIG_JSON --out OUT.safetensors
                                         [--min-pixels N] [--max-pixels N]
                                         [--exif-transpose] [--emit-decoded]
                                         IMAGE [IMAGE ...]

Needs only Python 3 + numpy + Pillow (Debian: numpy 1.24, Pillow 9.4).  No torch, no transformers.

Written from the upstream source, read from the stored copies of huggingface/transformers:
  * src/transformers/models/qwen2_vl/image_processing_qwen2_vl.py @ cb0fc56f3caccab77d00d44051a67d4b0980cbd2
    (the 4.50-4.52-era file, exact tag not recorded in the store: `size` dict with shortest_edge/longest_edge = min/max pixels,
    patch_size/temporal_patch_size/merge_size as _preprocess arguments, numpy patchify)
    functions: smart_resize, Qwen2VLImageProcessor.__init__, ._preprocess, .preprocess
  * src/transformers/models/qwen2_5_vl/image_processing_qwen2_5_vl.py @ 1a34c0c91b9f23a7914f451e8ae441eed2fb73ce
    (the early-2025 / 4.49-dev copy; same arithmetic, min/max pixels taken from self.min_pixels/self.max_pixels)
  * src/transformers/image_transforms.py (Optional[...]-typed 4.5x copy and @000593ad84f26043f62917c541c57c4b71b9bc94):
    resize, to_pil_image, _rescale_for_pil_conversion, rescale, normalize, convert_to_rgb,
    to_channel_dimension_format -- identical in behaviour across 4.49..4.5x.
  * src/transformers/image_utils.py: to_numpy_array (np.array(pil)), infer_channel_dimension_format,
    get_image_size.
  * Pillow src/libImaging/Resample.c for what Image.resize does (see pil_resample_ref.py / NOTES.md).

The numbers do not differ between 4.49 and 4.52 for a single image; see NOTES.md for what changed
(how min/max pixels are read from the config, and the later `max(factor, ...)` clamp / dropped
`< factor` check in newer smart_resize versions).

Pipeline for one image (dtype of each step in brackets):
  1. PIL.Image.open(path); load.                                       [PIL native mode]
  2. convert_to_rgb: if mode != "RGB": image.convert("RGB")            [uint8, RGBA -> alpha dropped]
  3. to_numpy_array: np.array(image) -> [H, W, 3]                      [uint8]
  4. infer_channel_dimension_format -> channels-last; get_image_size -> (H, W)
  5. smart_resize(H, W, factor=patch_size*merge_size, min_pixels, max_pixels)  [python float64 / int]
  6. resize(): Image.fromarray(arr).resize((w, h), resample=BICUBIC(3), reducing_gap=None)
     -> np.array -> [h, w, 3]                                          [uint8; PIL 8-bit fixed point,
                                                                        8-bit rounded intermediate]
  7. rescale: arr.astype(float64) * rescale_factor, then .astype(float32)   [float64 -> float32]
  8. normalize: (x - mean) / std with mean/std as float32 arrays       [float32 throughout]
  9. to channels-first [3, h, w]; stack to [1, 3, h, w]; repeat the frame temporal_patch_size-1 times
     -> [T, 3, h, w]; reshape/transpose (0,3,6,4,7,2,1,5,8) -> [grid_t*grid_h*grid_w, 3*T*P*P]
                                                                       [float32, no arithmetic]
"""
import argparse
import json
import math
import struct
import sys

import numpy as np
import PIL
from PIL import Image, ImageOps

TRANSFORMERS_SOURCE = (
    "transformers 4.50-4.52-era slow Qwen2VLImageProcessor "
    "(huggingface/transformers@cb0fc56f3caccab77d00d44051a67d4b0980cbd2 image_processing_qwen2_vl.py; "
    "identical numbers to 4.49.0)"
)

# transformers/utils/constants.py
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# PILImageResampling values (== PIL.Image.Resampling)
RESAMPLE_NAMES = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}


class OracleError(Exception):
    pass


# --------------------------------------------------------------------------------------------
# smart_resize -- image_processing_qwen2_vl.py (cb0fc56f) lines ~56-84, verbatim semantics.
# All arithmetic is Python: `/` is float64 true division (int/int correctly rounded),
# round() is round-half-to-EVEN (banker's), math.floor/ceil on float64.
# --------------------------------------------------------------------------------------------
def smart_resize(height, width, factor=28, min_pixels=56 * 56, max_pixels=14 * 14 * 4 * 1280):
    if height < factor or width < factor:
        raise ValueError(f"height:{height} or width:{width} must be larger than factor:{factor}")
    elif max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------
def _int_param(cfg, key, default):
    v = cfg.get(key, None)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
        raise OracleError(f"config key {key!r} must be an integer, got {v!r}")
    return int(v)


def _bool_param(cfg, key, default):
    v = cfg.get(key, None)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise OracleError(f"config key {key!r} must be true/false, got {v!r}")
    return v


def _float_list_param(cfg, key, default):
    v = cfg.get(key, None)
    if v is None:
        return list(default)
    if isinstance(v, bool):
        raise OracleError(f"config key {key!r} must be a number or list of numbers, got {v!r}")
    if isinstance(v, (int, float)):
        return [float(v)] * 3  # normalize(): a scalar mean/std is repeated per channel
    if isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        if len(v) != 3:
            raise OracleError(f"config key {key!r} must have 3 elements (one per RGB channel), got {len(v)}")
        return [float(x) for x in v]
    raise OracleError(f"config key {key!r} must be a number or list of numbers, got {v!r}")


def load_config(path, cli_min_pixels=None, cli_max_pixels=None):
    try:
        with open(path, "rb") as f:
            cfg = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise OracleError(f"cannot read config {path}: {e}")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OracleError(f"config {path} is not valid JSON: {e}")
    if not isinstance(cfg, dict):
        raise OracleError(f"config {path} must be a JSON object")

    p = {}
    p["do_resize"] = _bool_param(cfg, "do_resize", True)
    p["resample"] = _int_param(cfg, "resample", 3)  # PILImageResampling.BICUBIC
    if p["resample"] not in RESAMPLE_NAMES:
        raise OracleError(f"config resample={p['resample']} is not a PIL resampling filter (0..5)")
    p["do_rescale"] = _bool_param(cfg, "do_rescale", True)
    rf = cfg.get("rescale_factor", None)
    if rf is None:
        rf = 1 / 255
    if isinstance(rf, bool) or not isinstance(rf, (int, float)):
        raise OracleError(f"config rescale_factor must be a number, got {rf!r}")
    p["rescale_factor"] = float(rf)  # a Python float (float64), as from_pretrained passes it
    p["do_normalize"] = _bool_param(cfg, "do_normalize", True)
    p["image_mean"] = _float_list_param(cfg, "image_mean", OPENAI_CLIP_MEAN)
    p["image_std"] = _float_list_param(cfg, "image_std", OPENAI_CLIP_STD)
    p["do_convert_rgb"] = _bool_param(cfg, "do_convert_rgb", True)
    p["patch_size"] = _int_param(cfg, "patch_size", 14)
    p["temporal_patch_size"] = _int_param(cfg, "temporal_patch_size", 2)
    p["merge_size"] = _int_param(cfg, "merge_size", 2)
    for k in ("patch_size", "temporal_patch_size", "merge_size"):
        if p[k] < 1:
            raise OracleError(f"config {k}={p[k]} must be >= 1")

    # min/max pixels.  Qwen2VLImageProcessor.__init__ (cb0fc56f): size starts at the class default
    # {"shortest_edge": 56*56, "longest_edge": 28*28*1280}; the config's min_pixels / max_pixels keys
    # override it.  NOTE: in that version a *valid* "size" passed from the config is discarded by the
    # `if size is not None and (...): raise ... else: size = default` branch, and 4.49 never read "size"
    # for resizing at all -- so in both versions only the top-level min_pixels/max_pixels keys count.
    min_pixels = _int_param(cfg, "min_pixels", 56 * 56)
    max_pixels = _int_param(cfg, "max_pixels", 28 * 28 * 1280)
    size = cfg.get("size", None)
    if isinstance(size, dict) and ("shortest_edge" in size or "longest_edge" in size):
        if size.get("shortest_edge", min_pixels) != min_pixels or size.get("longest_edge", max_pixels) != max_pixels:
            print(
                f"ref_imageproc: note: config 'size'={size} is ignored (as in transformers 4.49-4.52); "
                f"using min_pixels={min_pixels}, max_pixels={max_pixels}",
                file=sys.stderr,
            )
    # --min-pixels/--max-pixels == passing min_pixels=/max_pixels= to preprocess() (overrides size)
    if cli_min_pixels is not None:
        min_pixels = cli_min_pixels
    if cli_max_pixels is not None:
        max_pixels = cli_max_pixels
    if min_pixels <= 0 or max_pixels <= 0:
        raise OracleError(f"min_pixels ({min_pixels}) and max_pixels ({max_pixels}) must be positive")
    if min_pixels > max_pixels:
        raise OracleError(f"config gives min_pixels={min_pixels} > max_pixels={max_pixels}")
    p["min_pixels"] = min_pixels
    p["max_pixels"] = max_pixels
    return p


# --------------------------------------------------------------------------------------------
# image_utils helpers
# --------------------------------------------------------------------------------------------
def infer_channel_dimension_format(image, num_channels=(1, 3)):
    """image_utils.infer_channel_dimension_format for a 3-D array; returns 'first' or 'last'."""
    if image.ndim != 3:
        raise ValueError(f"Unsupported number of image dimensions: {image.ndim}")
    first, last = image.shape[0], image.shape[2]
    if first in num_channels:  # (also the 'ambiguous' case: transformers warns and picks FIRST)
        return "first"
    if last in num_channels:
        return "last"
    raise ValueError("Unable to infer channel dimension format")


def get_image_size(image, channel_dim):
    if channel_dim == "first":
        return image.shape[-2], image.shape[-1]
    return image.shape[-3], image.shape[-2]


# --------------------------------------------------------------------------------------------
# one image
# --------------------------------------------------------------------------------------------
def process_image(path, p, exif_transpose=False):
    """Returns dict(decoded=uint8 HWC, resized=uint8 HWC, pixel_values=float32 2-D, grid=(t,h,w))."""
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise OracleError(f"{path}: no such file")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise OracleError(f"{path}: cannot read image: {e}")

    if exif_transpose:
        # only transformers.image_utils.load_image() does this (chat-template / URL path), not the
        # image processor itself; off by default
        img = ImageOps.exif_transpose(img)

    # image_transforms.convert_to_rgb: PIL convert("RGB") unless already RGB (no alpha compositing)
    if p["do_convert_rgb"] and img.mode != "RGB":
        try:
            img = img.convert("RGB")
        except (OSError, ValueError) as e:
            raise OracleError(f"{path}: cannot convert mode {img.mode} to RGB: {e}")

    # image_utils.to_numpy_array -> np.array(PIL image)
    arr = np.array(img)

    try:
        fmt = infer_channel_dimension_format(arr)
    except ValueError as e:
        raise OracleError(f"{path}: {e} (array shape {arr.shape}, PIL mode {img.mode})")
    if fmt != "last" or arr.dtype != np.uint8 or arr.shape[2] != 3:
        # transformers would infer channels-FIRST for a 1- or 3-row image and then either fail
        # in smart_resize (width 3 < factor) or produce garbage; we refuse.
        raise OracleError(
            f"{path}: unsupported decoded array shape {arr.shape} dtype {arr.dtype} "
            f"(inferred channels-{fmt}); transformers would fail on it"
        )
    decoded = arr
    height, width = get_image_size(arr, fmt)

    patch_size = p["patch_size"]
    merge_size = p["merge_size"]
    tps = p["temporal_patch_size"]

    resized_height, resized_width = height, width
    image = arr
    if p["do_resize"]:
        try:
            resized_height, resized_width = smart_resize(
                height,
                width,
                factor=patch_size * merge_size,
                min_pixels=p["min_pixels"],
                max_pixels=p["max_pixels"],
            )
        except ValueError as e:
            raise OracleError(f"{path}: smart_resize rejects {height}x{width} (HxW): {e}")
        if resized_height <= 0 or resized_width <= 0:
            raise OracleError(f"{path}: smart_resize gave an empty size {resized_height}x{resized_width}")
        # image_transforms.resize(): uint8 input -> _rescale_for_pil_conversion() is False ->
        # to_pil_image(): Image.fromarray(uint8 HWC) (mode RGB) -> PIL resize((w, h)) with
        # reducing_gap=None (resize() is called without it) -> np.array -> uint8 HWC.
        pil = Image.fromarray(image)
        out = pil.resize((resized_width, resized_height), resample=p["resample"], reducing_gap=None)
        image = np.array(out)
        if image.ndim == 2:
            image = np.expand_dims(image, axis=-1)
    resized = image  # uint8 [h, w, 3]

    if p["do_rescale"]:
        # image_transforms.rescale: float64 multiply by the Python float scale, then cast to float32
        image = image.astype(np.float64) * p["rescale_factor"]
        image = image.astype(np.float32)

    if p["do_normalize"]:
        # image_transforms.normalize: cast non-float input to float32; mean/std arrays get the
        # image dtype (float32); (image - mean) / std evaluated in float32 (channels-last broadcast)
        if not np.issubdtype(image.dtype, np.floating):
            image = image.astype(np.float32)
        mean = np.array(p["image_mean"], dtype=image.dtype)
        std = np.array(p["image_std"], dtype=image.dtype)
        image = (image - mean) / std

    # to_channel_dimension_format(image, FIRST): [h, w, c] -> [c, h, w]
    image = image.transpose(2, 0, 1)

    # _preprocess patchify (numpy)
    patches = np.array([image])  # [1, C, h, w]
    if patches.shape[0] % tps != 0:
        repeats = np.repeat(patches[-1][np.newaxis], tps - 1, axis=0)
        patches = np.concatenate([patches, repeats], axis=0)  # [tps, C, h, w], frames identical
    channel = patches.shape[1]
    grid_t = patches.shape[0] // tps
    grid_h, grid_w = resized_height // patch_size, resized_width // patch_size
    try:
        patches = patches.reshape(
            grid_t,
            tps,
            channel,
            grid_h // merge_size,
            merge_size,
            patch_size,
            grid_w // merge_size,
            merge_size,
            patch_size,
        )
    except ValueError as e:
        raise OracleError(
            f"{path}: image of {resized_height}x{resized_width} cannot be cut into {patch_size}px patches "
            f"merged {merge_size}x{merge_size} (transformers' reshape fails too): {e}"
        )
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    flatten_patches = patches.reshape(grid_t * grid_h * grid_w, channel * tps * patch_size * patch_size)

    if flatten_patches.dtype != np.float32:
        # only when do_rescale and do_normalize are both false: transformers keeps uint8 here
        print(
            f"ref_imageproc: note: {path}: pixel_values are {flatten_patches.dtype} in transformers "
            f"(no rescale/normalize); written as F32",
            file=sys.stderr,
        )
    return {
        "decoded": decoded,
        "resized": np.ascontiguousarray(resized),
        "pixel_values": np.ascontiguousarray(flatten_patches.astype(np.float32)),
        "grid": (grid_t, grid_h, grid_w),
    }


# --------------------------------------------------------------------------------------------
# safetensors writer (format: u64 LE header length, JSON header, raw little-endian data)
# --------------------------------------------------------------------------------------------
_ST_DTYPES = {"U8": "|u1", "F32": "<f4", "I64": "<i8"}


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    blobs = []
    offset = 0
    for name, dtype, arr in tensors:
        data = np.ascontiguousarray(arr.astype(_ST_DTYPES[dtype], copy=False)).tobytes()
        header[name] = {"dtype": dtype, "shape": [int(s) for s in arr.shape], "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # pad so the data section is 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="preprocessor_config.json")
    ap.add_argument("--out", required=True, help="output .safetensors")
    ap.add_argument("--min-pixels", type=int, default=None)
    ap.add_argument("--max-pixels", type=int, default=None)
    ap.add_argument("--exif-transpose", action="store_true",
                    help="apply ImageOps.exif_transpose first (what transformers.image_utils.load_image does)")
    ap.add_argument("--emit-decoded", action="store_true",
                    help="also write image.{i}.decoded U8 [H0,W0,3] (RGB after convert, before resize)")
    ap.add_argument("images", nargs="+")
    args = ap.parse_args(argv)

    try:
        p = load_config(args.config, args.min_pixels, args.max_pixels)
        tensors = []
        for i, path in enumerate(args.images):
            r = process_image(path, p, exif_transpose=args.exif_transpose)
            if args.emit_decoded:
                tensors.append((f"image.{i}.decoded", "U8", r["decoded"]))
            tensors.append((f"image.{i}.resized", "U8", r["resized"]))
            tensors.append((f"image.{i}.pixel_values", "F32", r["pixel_values"]))
            tensors.append((f"image.{i}.grid_thw", "I64", np.array(r["grid"], dtype=np.int64)))
        eff = dict(p)
        eff["resample"] = f'{p["resample"]} ({RESAMPLE_NAMES[p["resample"]]})'
        metadata = {
            "source": TRANSFORMERS_SOURCE,
            "images": ",".join(args.images),
            "effective_config": json.dumps(eff, sort_keys=True),
            "pillow": PIL.__version__,
            "numpy": np.__version__,
            "exif_transpose": str(bool(args.exif_transpose)).lower(),
        }
        try:
            write_safetensors(args.out, tensors, metadata)
        except OSError as e:
            raise OracleError(f"cannot write {args.out}: {e}")
    except OracleError as e:
        print(f"ref_imageproc: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
