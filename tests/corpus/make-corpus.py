#!/usr/bin/env python3
"""Write the malformed-safetensors corpus into OUTDIR.

Usage: make-corpus.py OUTDIR
       make-corpus.py --events-db TEMPLATE.db EVENTS OUT.db

Every case is one file (or one model directory for the sharded cases)
that `masq inspect` must reject with exit status 2 and a message that
names the file, the tensor and the fault; tests/corpus/expected.txt lists
each case with a substring its message must contain.  Two valid files
(one laid out exactly as Hugging Face's writer lays it out) must be
accepted.  Standard library only: the files are built byte by byte.

A case named events-*.txt is a session's settings and events as the fuzz
target fuzz_events reads them (a line per event, KIND<TAB>NAME<TAB>PAYLOAD,
and a first line settings<TAB>JSON; fuzz/fuzz_events.c): the reproducer
of a finding, as bytes.  tests/corpus.sh records a session of the tiny
demo and puts each such case into a copy of its database with
--events-db (in place of session 1's settings and events, in tables
without their CHECK constraints, as a hostile file can have them), then
runs `masq resume` on it.
"""

import json
import os
import struct
import sys

OUT = None


def header_bytes(header, pad=True):
    """Compact JSON of header (a dict, kept in order, or raw bytes/str),
    padded with spaces so that 8 + len is a multiple of 8 when pad."""
    if isinstance(header, (bytes, bytearray)):
        h = bytes(header)
    elif isinstance(header, str):
        h = header.encode("utf-8")
    else:
        h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return h


def st_bytes(header, data=b"", hlen=None, pad=True):
    """A safetensors file: u64 little-endian header length, header, data.
    hlen overrides the recorded length."""
    h = header_bytes(header, pad)
    n = len(h) if hlen is None else hlen
    return struct.pack("<Q", n) + h + data


def put(name, blob):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(blob)


def ent(dtype, shape, b, e):
    return {"dtype": dtype, "shape": shape, "data_offsets": [b, e]}


def f32(*xs):
    return struct.pack("<%df" % len(xs), *xs)


# The config of a 1-layer, hidden-8 Qwen2 text model, so that a sharded
# case fails on its safetensors whatever `masq inspect DIR` opens first.
CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "vocab_size": 16,
    "tie_word_embeddings": False,
}


def shard_dir(name, shards, index):
    """A model directory: config.json, shards {file: bytes} and the index
    (a dict, raw bytes, or None for no index)."""
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    for fn, blob in shards.items():
        with open(os.path.join(d, fn), "wb") as f:
            f.write(blob)
    if index is not None:
        if isinstance(index, dict):
            index = json.dumps(index, indent=2).encode("utf-8")
        with open(os.path.join(d, "model.safetensors.index.json"), "wb") as f:
            f.write(index)


def one(name, dtype="F32", n=2):
    """A shard holding one F32 tensor of n elements."""
    return st_bytes({name: ent(dtype, [n], 0, 4 * n)}, f32(*range(n)))


def two(a, b):
    """A shard holding two F32 [2] tensors."""
    return st_bytes({a: ent("F32", [2], 0, 8), b: ent("F32", [2], 8, 16)},
                    f32(1, 2, 3, 4))


def index(weight_map):
    return {"metadata": {"total_size": 0}, "weight_map": weight_map}


def valid_hf():
    """Laid out as huggingface/safetensors serialize() does it: compact JSON,
    __metadata__ first, tensors sorted by dtype alignment (largest first)
    then by name, data in that order, header padded with spaces to a
    multiple of 8."""
    tensors = [
        ("model.norm.weight", "F32", [4], f32(1, 1, 1, 1)),
        ("lm_head.weight", "BF16", [2, 4], struct.pack("<8H", *[0x3f80] * 8)),
        ("model.embed_tokens.weight", "BF16", [2, 4], struct.pack("<8H", *[0x4000] * 8)),
        ("position_ids", "I64", [3], struct.pack("<3q", 0, 1, 2)),
        ("modality", "U8", [3], bytes([0, 1, 2])),
    ]
    size = {"F32": 4, "BF16": 2, "I64": 8, "U8": 1}
    tensors.sort(key=lambda t: (-size[t[1]], t[0]))
    header = {"__metadata__": {"format": "pt"}}
    data = b""
    for name, dt, shape, blob in tensors:
        header[name] = ent(dt, shape, len(data), len(data) + len(blob))
        data += blob
    return st_bytes(header, data)


def valid_odd():
    """Valid but unusual: no __metadata__, pretty-printed JSON with keys in
    another order, an unpadded header (data not aligned), a 0-rank tensor,
    an empty tensor placed between others and a non-ASCII name."""
    hdr = {
        "scalar": {"data_offsets": [0, 8], "shape": [], "dtype": "F64"},
        "empty": {"shape": [0, 4], "dtype": "F32", "data_offsets": [8, 8]},
        "caf\u00e9.weight": {"dtype": "F16", "data_offsets": [8, 14], "shape": [3]},
    }
    text = json.dumps(hdr, indent=1, ensure_ascii=False) + "  "
    if (8 + len(text.encode("utf-8"))) % 8 == 0:
        text += " "
    data = struct.pack("<d", 0.5) + struct.pack("<3H", 0x3c00, 0x4000, 0xc000)
    return st_bytes(text, data, pad=False)


# -- model- and calibration-level faults: a complete 1-layer model of the
# -- CONFIG above, then one fault at a time.
def model_tensors(cfg=CONFIG, drop=(), reshape=None, redtype=None, extra=None):
    """Every tensor a 1-layer Qwen2 model of cfg declares, as F32 zeros-ish
    data; drop names to leave out, reshape {name: shape}, redtype {name: dt}."""
    H, I = cfg["hidden_size"], cfg["intermediate_size"]
    nh, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = H // nh
    shapes = {"model.embed_tokens.weight": [cfg["vocab_size"], H],
              "model.norm.weight": [H], "lm_head.weight": [cfg["vocab_size"], H]}
    p = "model.layers.0."
    shapes.update({p + "input_layernorm.weight": [H], p + "post_attention_layernorm.weight": [H],
                   p + "self_attn.q_proj.weight": [nh * hd, H], p + "self_attn.q_proj.bias": [nh * hd],
                   p + "self_attn.k_proj.weight": [kv * hd, H], p + "self_attn.k_proj.bias": [kv * hd],
                   p + "self_attn.v_proj.weight": [kv * hd, H], p + "self_attn.v_proj.bias": [kv * hd],
                   p + "self_attn.o_proj.weight": [H, nh * hd],
                   p + "mlp.gate_proj.weight": [I, H], p + "mlp.up_proj.weight": [I, H],
                   p + "mlp.down_proj.weight": [H, I]})
    shapes.update(extra or {})
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, shape in shapes.items():
        if name in drop:
            continue
        shape = (reshape or {}).get(name, shape)
        dt = (redtype or {}).get(name, "F32")
        n = 1
        for x in shape:
            n *= x
        size = {"F32": 4, "I32": 4, "BF16": 2}[dt]
        header[name] = ent(dt, shape, len(data), len(data) + size * n)
        data += bytes(size * n)
    return st_bytes(header, data)


def model_dir(name, cfg_text=None, **kw):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write(cfg_text if cfg_text is not None else json.dumps(CONFIG, indent=2))
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(model_tensors(**kw))


def calib_file(name, T=6, H=8, lens=(4, 2), mods=(0, 1, 1, 2, 0, 0), emb=None,
               pos_shape=None, mod_dtype="U8", drop=()):
    """A calibration set; every argument can be made wrong."""
    tensors = []
    e = emb if emb is not None else [0.5] * (T * H)
    tensors.append(("inputs_embeds", "F32", [T, H], struct.pack("<%df" % len(e), *e)))
    tensors.append(("modality", mod_dtype, [len(mods)], bytes(mods) if mod_dtype == "U8"
                    else struct.pack("<%di" % len(mods), *mods)))
    tensors.append(("seq_lens", "I32", [len(lens)], struct.pack("<%di" % len(lens), *lens)))
    ps = pos_shape or [3, T]
    n = 1
    for x in ps:
        n *= x
    tensors.append(("position_ids", "I64", ps, struct.pack("<%dq" % n, *([1] * n))))
    header = {"__metadata__": {"format": "pt", "calib_format": "masq-calib", "calib_version": "1"}}
    data = b""
    for tname, dt, shape, blob in tensors:
        if tname in drop:
            continue
        header[tname] = ent(dt, shape, len(data), len(data) + len(blob))
        data += blob
    put(name, st_bytes(header, data))


# -- reproducers of fuzz findings (HACKING.md, Fuzzing): the inputs, as bytes
EVENTS_CASES = {
    # fuzz_events: an alpha grid whose point count no int holds overflowed
    # the float-to-int conversion in pipe_opts_check (UBSan), and on x86
    # passed the 64-point limit as INT_MIN: a search of no points at all
    "events-alpha-grid-overflow.txt": b'settings\t{"alpha_step":50e-32}',
}


def events_db(template, events, out):
    """Copy TEMPLATE (a masq database) to OUT with session 1's settings and
    events replaced by those of the file EVENTS, as fuzz_events writes them."""
    import sqlite3
    if os.path.exists(out):
        os.unlink(out)
    src = sqlite3.connect(template)
    dst = sqlite3.connect(out)
    src.backup(dst)
    src.close()
    dst.execute("PRAGMA journal_mode = DELETE")
    dst.execute("PRAGMA writable_schema = ON")
    dst.execute("UPDATE sqlite_schema SET sql = replace(sql, ' CHECK (json_valid(settings))', '')"
                " WHERE name = 'sessions'")
    dst.execute("UPDATE sqlite_schema SET sql = replace(replace(replace(sql, ' CHECK (seq > 0)', ''),"
                " ' CHECK (kind IN (''command'', ''result'', ''error'', ''note''))', ''),"
                " ' CHECK (json_valid(payload))', '') WHERE name = 'events'")
    dst.execute("PRAGMA writable_schema = OFF")
    dst.commit()
    dst.close()
    db = sqlite3.connect(out)
    trig = db.execute("SELECT sql FROM sqlite_schema WHERE name = 'events_no_delete'").fetchone()[0]
    db.execute("DROP TRIGGER events_no_delete")
    db.execute("DELETE FROM events WHERE session = 1")
    db.execute(trig)
    with open(events, "rb") as f:
        data = f.read()
    seq = 0
    for i, line in enumerate(data.split(b"\n")):
        if not line:
            continue
        parts = line.split(b"\t", 2)
        if i == 0 and parts[0] == b"settings":
            db.execute("UPDATE sessions SET settings = CAST(? AS TEXT) WHERE id = 1",
                       (parts[1] if len(parts) > 1 else b"",))
            continue
        parts += [b""] * (3 - len(parts))
        seq += 1
        db.execute("INSERT INTO events (session, seq, kind, name, payload, created) VALUES"
                   " (1, ?, CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), '2026-03-05T00:00:00.000Z')",
                   (seq, parts[0], parts[1], parts[2]))
    db.commit()
    db.close()
    return 0


def main():
    global OUT
    if len(sys.argv) == 5 and sys.argv[1] == "--events-db":
        return events_db(sys.argv[2], sys.argv[3], sys.argv[4])
    if len(sys.argv) != 2:
        sys.stderr.write("usage: make-corpus.py OUTDIR\n")
        return 2
    OUT = sys.argv[1]
    os.makedirs(OUT, exist_ok=True)

    good = {"w": ent("F32", [2, 2], 0, 16)}
    gdata = f32(1, 2, 3, 4)

    # -- framing
    put("empty.safetensors", b"")
    put("short.safetensors", b"\x10\x00\x00\x00\x00")
    put("data-cut-short.safetensors", st_bytes(good, gdata[:10]))
    put("hlen-past-eof.safetensors", st_bytes(good, gdata, hlen=4096))
    put("hlen-huge.safetensors", st_bytes(good, gdata, hlen=1 << 63))
    put("hlen-zero.safetensors", st_bytes(b"", b"", hlen=0))
    # -- text of the header
    put("bad-utf8-name.safetensors",
        st_bytes(b'{"w\xff\xfe":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32(1)))
    put("overlong-utf8.safetensors",
        st_bytes(b'{"\xc0\xaf":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32(1)))
    put("invalid-json.safetensors",
        st_bytes(b'{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]', gdata))
    put("json-array.safetensors", st_bytes([good], gdata))
    put("json-string.safetensors", st_bytes('"w"', gdata))
    put("duplicate-name.safetensors",
        st_bytes(b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                 b'"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', gdata))
    put("duplicate-field.safetensors",
        st_bytes(b'{"w":{"dtype":"F32","dtype":"F16","shape":[2,2],'
                 b'"data_offsets":[0,16]}}', gdata))
    # -- entries
    put("entry-not-object.safetensors", st_bytes({"w": [0, 16]}, gdata))
    put("unknown-dtype.safetensors", st_bytes({"w": ent("F8_E4M3FNUZ", [16], 0, 16)}, gdata))
    put("f4-half-byte.safetensors", st_bytes({"w": ent("F4", [3], 0, 2)}, gdata[:2]))
    # every dtype the format defines beyond masq's arithmetic: read and carried
    put("valid-new-dtypes.safetensors", st_bytes({
        "c": ent("C64", [2], 0, 16), "e4": ent("F8_E4M3", [8], 16, 24), "e5": ent("F8_E5M2", [8], 24, 32),
        "e8": ent("F8_E8M0", [8], 32, 40), "f4": ent("F4", [4, 4], 40, 48), "f6a": ent("F6_E2M3", [8], 48, 54),
        "f6b": ent("F6_E3M2", [8], 54, 60)}, bytes(range(60))))
    put("dtype-not-string.safetensors", st_bytes({"w": ent(4, [4], 0, 16)}, gdata))
    put("missing-dtype.safetensors",
        st_bytes({"w": {"shape": [2, 2], "data_offsets": [0, 16]}}, gdata))
    put("missing-shape.safetensors",
        st_bytes({"w": {"dtype": "F32", "data_offsets": [0, 16]}}, gdata))
    put("missing-offsets.safetensors",
        st_bytes({"w": {"dtype": "F32", "shape": [2, 2]}}, gdata))
    put("negative-dim.safetensors", st_bytes({"w": ent("F32", [-2, -2], 0, 16)}, gdata))
    put("real-dim.safetensors", st_bytes({"w": ent("F32", [2.5, 2], 0, 16)}, gdata))
    put("string-dim.safetensors", st_bytes({"w": ent("F32", ["4"], 0, 16)}, gdata))
    put("too-many-dims.safetensors", st_bytes({"w": ent("F32", [1] * 9, 0, 4)}, f32(1)))
    put("shape-overflow.safetensors",
        st_bytes({"w": ent("F32", [1 << 32, 1 << 32, 2], 0, 16)}, gdata))
    put("bytes-overflow.safetensors",
        st_bytes({"w": ent("F32", [1 << 31, 1 << 31], 0, 16)}, gdata))
    put("size-mismatch.safetensors", st_bytes({"w": ent("F32", [2, 3], 0, 16)}, gdata))
    put("begin-after-end.safetensors", st_bytes({"w": ent("F32", [0], 16, 0)}, gdata))
    put("negative-offset.safetensors", st_bytes({"w": ent("F32", [4], -16, 0)}, gdata))
    put("offsets-not-pair.safetensors",
        st_bytes({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8, 16]}}, gdata))
    put("offsets-out-of-range.safetensors",
        st_bytes({"w": ent("F32", [4], 4096, 4112)}, gdata))
    # -- layout of the data buffer
    put("overlap.safetensors",
        st_bytes({"a": ent("F32", [3], 0, 12), "b": ent("F32", [2], 8, 16)}, gdata))
    put("hole.safetensors",
        st_bytes({"a": ent("F32", [1], 0, 4), "b": ent("F32", [2], 8, 16)}, gdata))
    put("hole-at-start.safetensors", st_bytes({"b": ent("F32", [2], 8, 16)}, gdata))
    put("trailing-data.safetensors",
        st_bytes({"a": ent("F32", [2], 0, 8)}, gdata))
    put("no-tensors-but-data.safetensors", st_bytes({}, gdata))
    # -- __metadata__
    put("metadata-not-object.safetensors",
        st_bytes({"__metadata__": ["format", "pt"], "w": good["w"]}, gdata))
    put("metadata-not-string.safetensors",
        st_bytes({"__metadata__": {"format": "pt", "version": 2}, "w": good["w"]}, gdata))
    put("metadata-duplicate-key.safetensors",
        st_bytes(b'{"__metadata__":{"format":"pt","format":"np"},'
                 b'"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}', gdata))
    # -- valid files
    put("valid-hf.safetensors", valid_hf())
    put("valid-odd.safetensors", valid_odd())

    # -- sharded model directories
    s1 = "model-00001-of-00002.safetensors"
    s2 = "model-00002-of-00002.safetensors"
    shard_dir("shard-missing-file", {s1: one("a")},
              index({"a": s1, "b": s2}))
    shard_dir("shard-lacks-tensor", {s1: one("a"), s2: one("b")},
              index({"a": s1, "b": s2, "c": s2}))
    shard_dir("shard-wrong-file", {s1: one("a"), s2: one("b")},
              index({"a": s2, "b": s1}))
    shard_dir("shard-unlisted-tensor", {s1: one("a"), s2: two("b", "extra")},
              index({"a": s1, "b": s2}))
    shard_dir("shard-tensor-twice", {s1: two("a", "b"), s2: one("b")},
              index({"a": s1, "b": s2}))
    shard_dir("shard-dotdot-name", {s1: one("a")},
              index({"a": s1, "b": "../" + s2}))
    shard_dir("shard-index-invalid-json", {s1: one("a")},
              b'{"weight_map": {"a": "' + s1.encode() + b'",}}')
    shard_dir("shard-index-no-weight-map", {s1: one("a")}, {"metadata": {}})
    shard_dir("shard-index-duplicate", {s1: one("a")},
              b'{"weight_map": {"a": "' + s1.encode() + b'", "a": "' + s1.encode() + b'"}}')
    shard_dir("shard-bad-shard", {s1: one("a"), s2: b"\x01\x00\x00\x00\x00\x00\x00\x00{"},
              index({"a": s1, "b": s2}))
    shard_dir("no-safetensors", {}, None)

    # -- model-level faults (the safetensors are valid; the model is not)
    model_dir("model-valid")
    model_dir("model-missing-up", drop=("model.layers.0.mlp.up_proj.weight",))
    model_dir("model-wrong-shape", reshape={"model.layers.0.self_attn.k_proj.weight": [8, 8]})
    model_dir("model-int-norm", redtype={"model.layers.0.input_layernorm.weight": "I32"})
    model_dir("model-missing-kbias", drop=("model.layers.0.self_attn.k_proj.bias",))
    model_dir("model-no-layers", drop=tuple("model.layers.0." + x for x in ("input_layernorm.weight",)))
    model_dir("model-config-invalid-json", cfg_text='{"hidden_size": 8,,}')
    # no model_type: every field is required
    model_dir("model-config-no-hidden", cfg_text=json.dumps({k: v for k, v in CONFIG.items()
                                                             if k not in ("hidden_size", "model_type")}))
    # qwen2 leaves out what equals Qwen2Config's defaults: hidden_size 4096
    model_dir("model-config-default-hidden", cfg_text=json.dumps({k: v for k, v in CONFIG.items() if k != "hidden_size"}))
    model_dir("model-config-qwen3-moe", cfg_text=json.dumps(dict(CONFIG, model_type="qwen3_vl_moe_text")))
    # Qwen3's config classes default head_dim to 128, not hidden / heads
    model_dir("model-config-qwen3-head-dim", cfg_text=json.dumps(dict(CONFIG, model_type="qwen3_vl_text")))
    model_dir("model-config-unknown-type", cfg_text=json.dumps(dict(CONFIG, model_type="internlm2")))
    model_dir("model-config-yarn", cfg_text=json.dumps(dict(CONFIG, rope_scaling={"rope_type": "yarn", "factor": 4.0})))
    model_dir("model-config-rope-factor", cfg_text=json.dumps(dict(CONFIG, rope_scaling={"type": "default", "factor": 2.0})))
    model_dir("model-config-v5-yarn", cfg_text=json.dumps(dict(CONFIG, rope_parameters={"rope_type": "yarn"})))
    model_dir("model-config-sliding", cfg_text=json.dumps(dict(CONFIG, use_sliding_window=True)))
    model_dir("model-config-eps-zero", cfg_text=json.dumps(dict(CONFIG, rms_norm_eps=0)))
    model_dir("model-config-gelu", cfg_text=json.dumps(dict(CONFIG, hidden_act="gelu")))
    # per-layer tensors the engine would ignore
    model_dir("model-qk-norm", extra={"model.layers.0.self_attn.q_norm.weight": [4],
                                      "model.layers.0.self_attn.k_norm.weight": [4]})
    model_dir("model-extra-layer", extra={"model.layers.1.input_layernorm.weight": [8]})
    bad = dict(CONFIG, rope_scaling={"type": "mrope", "mrope_section": [1, 1, 1]})
    model_dir("model-config-mrope-sum", cfg_text=json.dumps(bad))
    bad = dict(CONFIG, num_key_value_heads=3)
    model_dir("model-config-kv-heads", cfg_text=json.dumps(bad))
    bad = dict(CONFIG, hidden_size=1 << 40)
    model_dir("model-config-huge", cfg_text=json.dumps(bad))
    # -- calibration-set faults
    calib_file("calib-valid.safetensors")
    calib_file("calib-bad-modality.safetensors", mods=(0, 1, 7, 2, 0, 0))
    calib_file("calib-seq-lens-sum.safetensors", lens=(4, 3))
    calib_file("calib-no-seq-lens.safetensors", drop=("seq_lens",))
    calib_file("calib-nan.safetensors", emb=[0.5] * 13 + [float("nan")] + [0.5] * 34)
    calib_file("calib-pos-shape.safetensors", pos_shape=[2, 6])
    calib_file("calib-modality-i32.safetensors", mod_dtype="I32")
    calib_file("calib-modality-short.safetensors", mods=(0, 1, 1))
    calib_file("calib-zero-length.safetensors", lens=(6, 0))
    # -- fuzz findings
    for name, blob in EVENTS_CASES.items():
        put(name, blob)
    return 0


if __name__ == "__main__":
    sys.exit(main())
