"""Rewrite the tiny demo's checkpoint in the layouts and config styles that
transformers and the Hub produce, with the same weights:

  layouts.py SRC DST STYLE

STYLE: idefics3 ("model.text_model.layers."), minicpmv ("llm.model.layers."),
twice (the decoder under two unknown prefixes: refused), v5 (RoPE in text_config.rope_parameters, "dtype" for
"torch_dtype"), released (Qwen2.5-VL as released and as transformers
< 4.52 and >= 4.52.4 save it: "model.layers.", "lm_head"), internvl
("llm_config", "language_model.model.layers."), llava (root "llava", a
"llama" text_config that leaves out what equals LlamaConfig's defaults).
Tensor data are copied byte for byte; only names and config.json change.
"""
import json, os, shutil, struct, sys

src, dst, style = sys.argv[1:4]
os.makedirs(dst, exist_ok=True)
cfg = json.load(open(os.path.join(src, "config.json")))
tc = cfg["text_config"]

def rename(name):
    if style == "idefics3":
        return name.replace("model.language_model.", "model.text_model.", 1)
    if style == "minicpmv":
        return name.replace("model.language_model.", "llm.model.", 1)
    if style == "released":
        return name.replace("model.language_model.", "model.", 1)
    if style == "omni":
        # Qwen2.5-Omni: everything under the thinker (talker tensors added below)
        if name == "lm_head.weight":
            return "thinker.lm_head.weight"
        if name.startswith("model.visual."):
            return name.replace("model.visual.", "thinker.visual.", 1)
        return name.replace("model.language_model.", "thinker.model.", 1)
    if style == "internvl":
        if name == "lm_head.weight":
            return "language_model.lm_head.weight"
        return name.replace("model.language_model.", "language_model.model.", 1)
    return name

for f in sorted(os.listdir(src)):
    p = os.path.join(src, f)
    if f.endswith(".safetensors"):
        b = open(p, "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        h = json.loads(b[8:8 + n])
        h2 = {(k if k == "__metadata__" else rename(k)): v for k, v in h.items()}
        body = b[8 + n:]
        if style == "omni":
            # a talker with a decoder layer of its own, and a codec weight:
            # carried through, never taken for the thinker's
            extra = b""
            for k in ("talker.model.layers.0.self_attn.q_proj.weight", "token2wav.code2wav_dit_model.proj.weight"):
                raw = struct.pack("<256H", *[0x3c00 + (i % 64) for i in range(256)])  # small finite BF16
                off = len(body) + len(extra)
                h2[k] = {"dtype": "BF16", "shape": [16, 16], "data_offsets": [off, off + len(raw)]}
                extra += raw
            body += extra
        if style == "twice":
            # the decoder's tensors under two unknown prefixes, each with its own copy of the data
            h2, extra = {}, b""
            for k, v in h.items():
                if k.startswith("model.language_model.layers."):
                    h2[k.replace("model.language_model.", "a.", 1)] = v
                    lo, hi = v["data_offsets"]
                    off = len(body) + len(extra)
                    h2[k.replace("model.language_model.", "b.", 1)] = dict(v, data_offsets=[off, off + hi - lo])
                    extra += body[lo:hi]
                else:
                    h2[k] = v
            body += extra
        hb = json.dumps(h2, separators=(",", ":")).encode()
        hb += b" " * ((8 - len(hb) % 8) % 8)
        open(os.path.join(dst, f), "wb").write(struct.pack("<Q", len(hb)) + hb + body)
    elif f == "model.safetensors.index.json":
        ix = json.load(open(p))
        ix["weight_map"] = {rename(k): v for k, v in ix["weight_map"].items()}
        if style == "twice":
            wm = {}
            for k, v in ix["weight_map"].items():
                if k.startswith("model.language_model.layers."):
                    wm[k.replace("model.language_model.", "a.", 1)] = v
                    wm[k.replace("model.language_model.", "b.", 1)] = v
                else:
                    wm[k] = v
            ix["weight_map"] = wm
        json.dump(ix, open(os.path.join(dst, f), "w"), indent=2)
    elif f != "config.json":
        shutil.copy(p, os.path.join(dst, f))

if style == "v5":
    rs = tc.pop("rope_scaling")
    tc["rope_parameters"] = {"rope_type": "default", "mrope_section": rs["mrope_section"],
                             "rope_theta": tc.pop("rope_theta")}
    for d in (cfg, tc):
        if "torch_dtype" in d:
            d["dtype"] = d.pop("torch_dtype")
elif style == "internvl":
    tc = dict(tc, model_type="qwen2")
    del cfg["text_config"]
    cfg = {"architectures": ["InternVLChatModel"], "model_type": "internvl_chat", "llm_config": tc,
           "vision_config": cfg["vision_config"]}
elif style == "omni":
    tc = dict(tc, model_type="qwen2_5_omni_text")
    del cfg["text_config"]
    cfg = {"architectures": ["Qwen2_5OmniForConditionalGeneration"], "model_type": "qwen2_5_omni",
           "thinker_config": {"model_type": "qwen2_5_omni_thinker", "text_config": tc,
                              "audio_token_index": 151646, "image_token_index": 151655},
           "talker_config": {"model_type": "qwen2_5_omni_talker", "hidden_size": 16, "num_hidden_layers": 1},
           "token2wav_config": {"model_type": "qwen2_5_omni_token2wav"}}
elif style == "llava":
    tc = {k: v for k, v in tc.items() if k not in ("rms_norm_eps", "rope_theta", "hidden_act", "model_type")}
    tc["model_type"] = "llama"
    cfg = {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "text_config": tc,
           "image_token_index": 32000}
json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=2)
