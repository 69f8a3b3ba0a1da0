#!/usr/bin/python3
"""capture_standin.py: tiny torch stand-ins for the transformers models that
tools/masq-capture hooks, and the checker of what it writes.

A stand-in is a module tree shaped like transformers' (an outer model with
.config holding the media token ids, the vision/audio towers, a text
decoder that owns embed_tokens and layers) with a fake processor (a chat
template, placeholder expansion, pixel and audio features).  Its forward
merges the tower features into the embeddings and computes the positions
itself, then calls the decoder as transformers does: keywords inputs_embeds,
position_ids, attention_mask (and visual_pos_masks, deepstack_visual_embeds
for Qwen3-VL).  With MASQ_STANDIN_DUMP=DIR set, each call writes what it
fed the decoder to DIR/call-NNNN.npz just before the call (and the decoder,
should it run, leaves DIR/ran-NNNN), so that the checker can compare the
set with what the model really fed its decoder.

  load(NAME, dtype, device)      masq-capture --standin THIS --model standin:VARIANT
  capture_standin.py make-media DIR
  capture_standin.py check CALIB DUMPDIR [LABEL/]VARIANT [INSPECT_JSON [K=V,...]]
                                 unnumbered TAP: the set against the dumps
                                 and `masq inspect --json`; K is seqs,
                                 vision, audio, deepstack or rows

Variants (VARIANTS): qwen2_5_vl (4.52+ tree, [3, 1, L] positions, images and
videos), qwen2_5_vl_449 (4.49-4.51 tree: the decoder is model.model),
qwen2_5_vl_mm (a 5.x-like forward that needs mm_token_type_ids, which the
processor gives only when asked), qwen2_5_vl_flat (positions left to the
decoder: plain, as 5.x without mm_token_type_ids), qwen2_5_vl_nan (a NaN in
an image feature), omni_thinker (the Qwen2.5-Omni thinker: *_token_index,
audio, the decoder at .model), llava (the 4.49 tree: language_model is a
CausalLM, position_ids None), qwen3_vl (deepstack, [4, 1, L] positions with
a text row first).
"""

import json
import math
import os
import re
import struct
import sys
import types
import wave
import zlib

# check and make-media need no torch, whose import takes seconds: there the
# model classes below are defined on a placeholder base and never built.
if __name__ == "__main__" and sys.argv[1:2] in (["check"], ["make-media"]):
    torch = None
    nn = types.SimpleNamespace(Module=object)
else:
    import torch
    import torch.nn as nn

VARIANTS = ("qwen2_5_vl", "qwen2_5_vl_449", "qwen2_5_vl_mm", "qwen2_5_vl_flat", "qwen2_5_vl_nan",
            "omni_thinker", "llava", "qwen3_vl")
HIDDEN = 16
LAYERS = 4
VOCAB = 200
SPECIAL = {"<|im_start|>": 1, "<|im_end|>": 2, "<|vision_start|>": 3, "<|vision_end|>": 4,
           "<|image_pad|>": 5, "<|video_pad|>": 6, "<|audio_bos|>": 7, "<|audio_eos|>": 8,
           "<|AUDIO|>": 9, "<image>": 11, "\n": 10}
IMG, VID, AUD, LLAVA_IMG = 5, 6, 9, 11
TOKENS_PER_SECOND = 2
SAMPLING_RATE = 16000


class Cfg(types.SimpleNamespace):
    """A config: attributes only, as PretrainedConfig presents them."""


def dump_dir():
    return os.environ.get("MASQ_STANDIN_DUMP")


def _next(prefix):
    d = dump_dir()
    n = len([f for f in os.listdir(d) if f.startswith(prefix)])
    return os.path.join(d, f"{prefix}{n:04d}")


def fed(inputs_embeds, position_ids, modality, visual_pos_masks=None, deepstack=None):
    """Record what is about to be fed to the decoder (numpy, float32)."""
    if not dump_dir():
        return
    import numpy as np
    out = {"inputs_embeds": inputs_embeds.detach().float().numpy(), "modality": modality.numpy()}
    if position_ids is not None:
        out["position_ids"] = position_ids.numpy()
    if visual_pos_masks is not None:
        out["visual_pos_masks"] = visual_pos_masks.numpy()
    for k, t in enumerate(deepstack or []):
        out[f"deepstack_{k}"] = t.detach().float().numpy()
    np.savez(_next("call-") + ".npz", **out)


# ---- the processor --------------------------------------------------------------

def tokenize(text):
    ids = []
    pat = "(" + "|".join(re.escape(s) for s in SPECIAL) + ")"
    for part in re.split(pat, text):
        if part in SPECIAL:
            ids.append(SPECIAL[part])
        else:
            ids.extend(20 + zlib.crc32(w.encode()) % (VOCAB - 20) for w in part.split())
    return ids


def image_features(im, gh, gw):
    """Patch features of an image: [4 gh gw, 3], the patches of each merged
    2x2 block consecutive (as Qwen's image processor orders them)."""
    im = im.convert("RGB").resize((2 * gw, 2 * gh))
    px = list(im.getdata())
    rows = []
    for by in range(gh):
        for bx in range(gw):
            for dy in range(2):
                for dx in range(2):
                    r, g, b = px[(2 * by + dy) * 2 * gw + 2 * bx + dx]
                    rows.append([r / 255.0, g / 255.0, b / 255.0])
    return torch.tensor(rows)


def grid_of(im):
    w, h = im.size
    return max(2, round(h / 32)), max(2, round(w / 32))


class Processor:
    def __init__(self, kind):
        self.kind = kind
        if kind == "omni":
            self.feature_extractor = types.SimpleNamespace(sampling_rate=SAMPLING_RATE)

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=False, **kwargs):
        assert tokenize is False
        if self.kind == "llava":
            out = ""
            for m in messages:
                items = m["content"]
                imgs = sum(1 for c in items if c["type"] == "image")
                text = " ".join(c["text"] for c in items if c["type"] == "text")
                out += ("USER: " if m["role"] == "user" else m["role"].upper() + ": ") + "<image>\n" * imgs + text
            return out + (" ASSISTANT:" if add_generation_prompt else "")
        out = ""
        if messages[0]["role"] != "system" and self.kind == "qwen":
            out += "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        for m in messages:
            out += f"<|im_start|>{m['role']}\n"
            for c in m["content"]:
                out += {"image": "<|vision_start|><|image_pad|><|vision_end|>",
                        "video": "<|vision_start|><|video_pad|><|vision_end|>",
                        "audio": "<|audio_bos|><|AUDIO|><|audio_eos|>"}.get(c["type"], c.get("text", ""))
            out += "<|im_end|>\n"
        if add_generation_prompt:
            out += "<|im_start|>assistant\n"
        return out

    def __call__(self, text=None, images=None, videos=None, audio=None, return_tensors=None,
                 return_mm_token_type_ids=None, **kwargs):
        assert return_tensors == "pt" and len(text) == 1
        prompt = text[0]
        out = {}
        if self.kind == "llava":
            n = prompt.count("<image>")
            assert n == len(images or []), (n, images)
            prompt = prompt.replace("<image>", "<image>" * 9)
            if images:
                out["pixel_values"] = torch.stack([
                    torch.tensor(list(im.convert("RGB").resize((12, 12)).getdata()), dtype=torch.float32)
                    .view(12, 12, 3).permute(2, 0, 1) / 255.0 for im in images])
        else:
            if images:
                grids = [grid_of(im) for im in images]
                for gh, gw in grids:
                    prompt = prompt.replace("<|image_pad|>", "<|IMG|>" * (gh * gw), 1)
                out["pixel_values"] = torch.cat([image_features(im, *g) for im, g in zip(images, grids)])
                out["image_grid_thw"] = torch.tensor([[1, 2 * gh, 2 * gw] for gh, gw in grids])
            if videos:
                feats, thw = [], []
                for frames in videos:
                    gh, gw = grid_of(frames[0])
                    t = (len(frames) + 1) // 2
                    for i in range(t):
                        pair = frames[2 * i:2 * i + 2]
                        feats.append(sum(image_features(f, gh, gw) for f in pair) / len(pair))
                    thw.append([t, 2 * gh, 2 * gw])
                    prompt = prompt.replace("<|video_pad|>", "<|VID|>" * (t * gh * gw), 1)
                out["pixel_values_videos"] = torch.cat(feats)
                out["video_grid_thw"] = torch.tensor(thw)
                out["second_per_grid_ts"] = torch.tensor([1.0] * len(videos))
            if audio:
                lens = [max(1, len(a) // 400) for a in audio]
                frames = max(2 * n for n in lens)
                feats = torch.zeros(len(audio), 4, frames)
                mask = torch.zeros(len(audio), frames, dtype=torch.long)
                for i, (a, n) in enumerate(zip(audio, lens)):
                    a = torch.as_tensor(a, dtype=torch.float32)
                    for j in range(2 * n):
                        seg = a[j * 200:(j + 1) * 200]
                        feats[i, :, j] = torch.stack([seg.mean(), seg.abs().mean(), seg.max(), seg.min()])
                    mask[i, :2 * n] = 1
                    prompt = prompt.replace("<|AUDIO|>", "<|AUD|>" * n, 1)
                out["input_features"] = feats
                out["feature_attention_mask"] = mask
            prompt = prompt.replace("<|IMG|>", "<|image_pad|>").replace("<|VID|>", "<|video_pad|>") \
                .replace("<|AUD|>", "<|AUDIO|>")
        ids = torch.tensor([tokenize(prompt)])
        out["input_ids"] = ids
        out["attention_mask"] = torch.ones_like(ids)
        if return_mm_token_type_ids:       # only when asked, as the 4.53-5.x processors do
            mm = torch.zeros_like(ids)
            mm[ids == IMG] = 1
            mm[ids == VID] = 2
            out["mm_token_type_ids"] = mm
        return out


# ---- the models ---------------------------------------------------------------------

class TextModel(nn.Module):
    """The text decoder: owns embed_tokens and layers, as Qwen2_5_VLTextModel,
    Qwen3VLTextModel, Qwen2_5OmniThinkerTextModel and LlamaModel do."""

    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleList(nn.Linear(HIDDEN, HIDDEN) for _ in range(LAYERS))
        self.norm = nn.LayerNorm(HIDDEN)

    def get_input_embeddings(self):
        return self.embed_tokens

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, cache_position=None, visual_pos_masks=None,
                deepstack_visual_embeds=None, **kwargs):
        if dump_dir():
            open(_next("ran-"), "w").close()
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        for i, layer in enumerate(self.layers):
            h = torch.tanh(layer(h))
            if deepstack_visual_embeds is not None and i < len(deepstack_visual_embeds):
                h = h.clone()
                h[visual_pos_masks] = h[visual_pos_masks] + deepstack_visual_embeds[i]
        return types.SimpleNamespace(last_hidden_state=self.norm(h))


class QwenVisual(nn.Module):
    """2x2 patch merger; Qwen3-VL's also gives deepstack features."""

    def __init__(self, deepstack=0):
        super().__init__()
        self.merger = nn.Linear(12, HIDDEN)
        self.deepstack_merger_list = nn.ModuleList(nn.Linear(12, HIDDEN) for _ in range(deepstack))

    def forward(self, pixel_values, grid_thw=None):
        x = pixel_values.reshape(-1, 12)
        y = self.merger(x)
        if len(self.deepstack_merger_list):
            return y, [m(x) for m in self.deepstack_merger_list]
        return y


class AudioTower(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, HIDDEN)
        self.layers = nn.ModuleList([nn.Linear(HIDDEN, HIDDEN)])     # as Qwen2_5OmniAudioEncoder has

    def forward(self, input_features, feature_attention_mask):
        outs = []
        for f, m in zip(input_features, feature_attention_mask):
            n = int(m.sum()) // 2
            x = f[:, :2 * n].t().reshape(n, 8)
            outs.append(self.proj(x))
        return torch.cat(outs)


def mrope_positions(ids, grids, second_per_grid, time_rows=False):
    """[3, L] M-RoPE positions as Qwen's get_rope_index gives them: text and
    audio count on in all three rows; a vision block of t x h x w merged
    patches at p has t = p + time, h = p + row, w = p + column, and the text
    after it goes on from the largest plus one."""
    L = ids.shape[0]
    pos = torch.zeros(3, L, dtype=torch.int64)
    cur, i, g = 0, 0, 0
    while i < L:
        tok = int(ids[i])
        if tok in (IMG, VID):
            t, gh, gw = grids[g]
            dt = second_per_grid[g] * TOKENS_PER_SECOND
            g += 1
            n = t * gh * gw
            k = 0
            for tt in range(t):
                for r in range(gh):
                    for c in range(gw):
                        pos[:, i + k] = torch.tensor([cur + int(tt * dt), cur + r, cur + c])
                        k += 1
            cur = int(pos[:, i:i + n].max()) + 1
            i += n
        else:
            pos[:, i] = cur
            cur += 1
            i += 1
    return pos


def media_grids(ids, image_grid_thw, video_grid_thw, second_per_grid_ts):
    """The blocks in token order: (t, h, w) merged, and the seconds per t."""
    grids, secs = [], []
    it = iter(image_grid_thw.tolist() if image_grid_thw is not None else [])
    iv = iter(video_grid_thw.tolist() if video_grid_thw is not None else [])
    sv = iter(second_per_grid_ts.tolist() if second_per_grid_ts is not None else [])
    prev = None
    for tok in ids.tolist():
        if tok in (IMG, VID) and tok != prev:
            t, h, w = next(it) if tok == IMG else next(iv)
            grids.append((t, h // 2, w // 2))
            secs.append(0.0 if tok == IMG else next(sv))
        prev = tok
    return grids, secs


def merge(embeds, ids, token, feats):
    mask = (ids == token).unsqueeze(-1).expand_as(embeds)
    return embeds.masked_scatter(mask, feats.to(embeds.dtype))


class QwenInner(nn.Module):
    """Qwen2_5_VLModel (4.52+) / Qwen3VLModel: visual + language_model."""

    def __init__(self, config, variant):
        super().__init__()
        self.config = config
        self.variant = variant
        self.visual = QwenVisual(deepstack=3 if variant == "qwen3_vl" else 0)
        self.language_model = TextModel()
        self.rope_deltas = None

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
                pixel_values=None, pixel_values_videos=None, image_grid_thw=None, video_grid_thw=None,
                second_per_grid_ts=None, mm_token_type_ids=None, use_cache=None, **kwargs):
        return qwen_forward(self, self.language_model, input_ids, attention_mask, position_ids, pixel_values,
                            pixel_values_videos, image_grid_thw, video_grid_thw, second_per_grid_ts,
                            mm_token_type_ids, use_cache, kwargs)


def qwen_forward(owner, decoder, input_ids, attention_mask, position_ids, pixel_values, pixel_values_videos,
                 image_grid_thw, video_grid_thw, second_per_grid_ts, mm_token_type_ids, use_cache, kwargs):
    v = owner.variant
    ids = input_ids[0]
    e = decoder.embed_tokens(input_ids)
    mod = torch.zeros(ids.shape[0], dtype=torch.uint8)
    ds = None
    vis_feats = []
    if pixel_values is not None:
        f = owner.visual(pixel_values.to(e.dtype), grid_thw=image_grid_thw)
        if isinstance(f, tuple):
            f, dsi = f
            vis_feats.append((IMG, dsi))
        if v == "qwen2_5_vl_nan":
            f = f.clone()
            f[1, 3] = float("nan")
        e = merge(e, input_ids, IMG, f)
        mod[ids == IMG] = 1
    if pixel_values_videos is not None:
        f = owner.visual(pixel_values_videos.to(e.dtype), grid_thw=video_grid_thw)
        if isinstance(f, tuple):
            f, dsv = f
            vis_feats.append((VID, dsv))
        e = merge(e, input_ids, VID, f)
        mod[ids == VID] = 1
    vmask = None
    if vis_feats:
        # deepstack rows in token order over image and video tokens
        vmask = (input_ids == IMG) | (input_ids == VID)
        ds = []
        for k in range(len(vis_feats[0][1])):
            joint = e.new_zeros(int(vmask.sum()), e.shape[-1])
            sel = ids[vmask[0]]
            for tok, feats in vis_feats:
                joint[sel == tok] = feats[k].to(e.dtype)
            ds.append(joint)
    if position_ids is None:
        grids, secs = media_grids(ids, image_grid_thw, video_grid_thw, second_per_grid_ts)
        need_mm = v == "qwen2_5_vl_mm"
        if v == "qwen2_5_vl_flat" or (need_mm and mm_token_type_ids is None) or not grids:
            position_ids = None          # the decoder counts 0, 1, ... in all three rows
        else:
            p = mrope_positions(ids, grids, secs)
            owner.rope_deltas = torch.tensor([[int(p.max()) + 1 - ids.shape[0]]])
            position_ids = p.unsqueeze(1)                                # [3, 1, L]
            if v == "qwen3_vl":
                text = torch.arange(ids.shape[0]).view(1, 1, -1)
                position_ids = torch.cat([text, position_ids], dim=0)   # [4, 1, L]
    fed(e[0], position_ids, mod, vmask, ds)
    extra = {}
    if v == "qwen3_vl":
        extra = {"visual_pos_masks": vmask, "deepstack_visual_embeds": ds}
    return decoder(input_ids=None, position_ids=position_ids, attention_mask=attention_mask,
                   past_key_values=None, inputs_embeds=e, use_cache=use_cache, **extra, **kwargs)


class QwenForConditionalGeneration(nn.Module):
    """Qwen2_5_VLForConditionalGeneration / Qwen3VLForConditionalGeneration
    (4.52+): .model is the multimodal model, the decoder is
    .model.language_model."""

    def __init__(self, config, variant):
        super().__init__()
        self.config = config
        self.model = QwenInner(config, variant)
        self.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
                pixel_values=None, pixel_values_videos=None, image_grid_thw=None, video_grid_thw=None,
                second_per_grid_ts=None, use_cache=None, **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         pixel_values=pixel_values, pixel_values_videos=pixel_values_videos,
                         image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw,
                         second_per_grid_ts=second_per_grid_ts, use_cache=use_cache, **kwargs)
        return types.SimpleNamespace(logits=self.lm_head(out.last_hidden_state))


class QwenMMForConditionalGeneration(QwenForConditionalGeneration):
    """As transformers 5.x: mm_token_type_ids is a named parameter."""

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
                pixel_values=None, pixel_values_videos=None, image_grid_thw=None, video_grid_thw=None,
                second_per_grid_ts=None, mm_token_type_ids=None, use_cache=None, **kwargs):
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                               pixel_values_videos=pixel_values_videos, image_grid_thw=image_grid_thw,
                               video_grid_thw=video_grid_thw, second_per_grid_ts=second_per_grid_ts,
                               mm_token_type_ids=mm_token_type_ids, use_cache=use_cache, **kwargs)


class Qwen449ForConditionalGeneration(nn.Module):
    """Qwen2_5_VLForConditionalGeneration as in 4.49-4.51: .visual on the
    outer model and .model the text decoder itself."""

    def __init__(self, config, variant):
        super().__init__()
        self.config = config
        self.variant = variant
        self.visual = QwenVisual()
        self.model = TextModel()
        self.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
        self.rope_deltas = None

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, pixel_values=None,
                pixel_values_videos=None, image_grid_thw=None, video_grid_thw=None, second_per_grid_ts=None,
                use_cache=None, **kwargs):
        out = qwen_forward(self, self.model, input_ids, attention_mask, position_ids, pixel_values,
                           pixel_values_videos, image_grid_thw, video_grid_thw, second_per_grid_ts, None,
                           use_cache, kwargs)
        return types.SimpleNamespace(logits=self.lm_head(out.last_hidden_state))


class OmniThinkerForConditionalGeneration(nn.Module):
    """Qwen2_5OmniThinkerForConditionalGeneration: towers on the thinker,
    .model the text decoder; audio positions count on as text does."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.visual = QwenVisual()
        self.audio_tower = AudioTower()
        self.model = TextModel()
        self.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
        self.rope_deltas = None

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, pixel_values=None,
                image_grid_thw=None, input_features=None, feature_attention_mask=None, use_cache=None,
                pixel_values_videos=None, video_grid_thw=None, video_second_per_grid=None, **kwargs):
        ids = input_ids[0]
        e = self.model.embed_tokens(input_ids)
        mod = torch.zeros(ids.shape[0], dtype=torch.uint8)
        if input_features is not None:
            e = merge(e, input_ids, self.config.audio_token_index,
                      self.audio_tower(input_features.to(e.dtype), feature_attention_mask))
            mod[ids == self.config.audio_token_index] = 2
        if pixel_values is not None:
            e = merge(e, input_ids, self.config.image_token_index, self.visual(pixel_values.to(e.dtype)))
            mod[ids == self.config.image_token_index] = 1
        if attention_mask is not None and position_ids is None:
            grids, secs = media_grids(ids, image_grid_thw, None, None)
            position_ids = mrope_positions(ids, grids, secs).unsqueeze(1)
        fed(e[0], position_ids, mod)
        out = self.model(attention_mask=attention_mask, position_ids=position_ids, past_key_values=None,
                         inputs_embeds=e, use_cache=use_cache)
        return types.SimpleNamespace(logits=self.lm_head(out.last_hidden_state))


class CausalLM(nn.Module):
    """LlamaForCausalLM: .model is the decoder, called with keywords."""

    def __init__(self):
        super().__init__()
        self.model = TextModel()
        self.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, attention_mask=None, position_ids=None, past_key_values=None, inputs_embeds=None,
                use_cache=None, **kwargs):
        out = self.model(input_ids=None, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache)
        return types.SimpleNamespace(logits=self.lm_head(out.last_hidden_state))


class LlavaForConditionalGeneration(nn.Module):
    """LlavaForConditionalGeneration as in 4.49-4.51: vision_tower,
    multi_modal_projector, language_model a CausalLM; position_ids None."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.vision_tower = nn.Linear(48, 32)
        self.multi_modal_projector = nn.Linear(32, HIDDEN)
        self.language_model = CausalLM()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, pixel_values=None,
                use_cache=None, **kwargs):
        ids = input_ids[0]
        e = self.get_input_embeddings()(input_ids)
        mod = torch.zeros(ids.shape[0], dtype=torch.uint8)
        if pixel_values is not None:
            n = pixel_values.shape[0]
            patches = pixel_values.unfold(2, 4, 4).unfold(3, 4, 4)          # [n, 3, 3, 3, 4, 4]
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(n * 9, 48)
            f = self.multi_modal_projector(torch.relu(self.vision_tower(patches.to(e.dtype))))
            e = merge(e, input_ids, self.config.image_token_index, f)
            mod[ids == self.config.image_token_index] = 1
        fed(e[0], position_ids, mod)
        return self.language_model(attention_mask=attention_mask, position_ids=position_ids,
                                   past_key_values=None, inputs_embeds=e, use_cache=use_cache)


def load(name, dtype, device):
    variant = name.split(":", 1)[1] if name.startswith("standin:") else name
    if variant not in VARIANTS:
        raise SystemExit(f"capture_standin: unknown variant {variant!r} ({', '.join(VARIANTS)})")
    torch.manual_seed(14)
    text = Cfg(hidden_size=HIDDEN, num_hidden_layers=LAYERS)
    if variant.startswith("qwen2_5_vl") or variant == "qwen3_vl":
        cfg = Cfg(model_type="qwen3_vl" if variant == "qwen3_vl" else "qwen2_5_vl", image_token_id=IMG,
                  video_token_id=VID, vision_start_token_id=3, text_config=text,
                  vision_config=Cfg(spatial_merge_size=2))
        cls = {"qwen2_5_vl_449": Qwen449ForConditionalGeneration,
               "qwen2_5_vl_mm": QwenMMForConditionalGeneration}.get(variant, QwenForConditionalGeneration)
        model = cls(cfg, variant)
        proc = Processor("qwen")
    elif variant == "omni_thinker":
        # only *_token_index, as Qwen2_5OmniThinkerConfig stores them
        cfg = Cfg(model_type="qwen2_5_omni_thinker", image_token_index=IMG, video_token_index=VID,
                  audio_token_index=AUD, text_config=text)
        model = OmniThinkerForConditionalGeneration(cfg)
        proc = Processor("omni")
    else:
        cfg = Cfg(model_type="llava", image_token_index=LLAVA_IMG, text_config=text)
        model = LlavaForConditionalGeneration(cfg)
        proc = Processor("llava")
    return model.to(device=device, dtype=dtype), proc


# ---- make-media ---------------------------------------------------------------------

def make_media(d):
    from PIL import Image
    os.makedirs(os.path.join(d, "frames"), exist_ok=True)

    def picture(w, h, seed):
        im = Image.new("RGB", (w, h))
        im.putdata([((x * 7 + seed * 50) % 256, (y * 5 + seed * 30) % 256, ((x + y) * 3 + seed) % 256)
                    for y in range(h) for x in range(w)])
        return im
    picture(64, 96, 1).save(os.path.join(d, "a.png"))
    picture(128, 64, 2).save(os.path.join(d, "b.png"))
    for i in range(4):
        picture(64, 64, 3 + i).save(os.path.join(d, "frames", f"{i:04d}.png"))
    for name, rate in (("tone.wav", SAMPLING_RATE), ("tone8k.wav", 8000)):
        with wave.open(os.path.join(d, name), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            n = rate // 2
            w.writeframes(struct.pack(f"<{n}h", *[int(12000 * math.sin(2 * math.pi * 440 * i / rate))
                                                    for i in range(n)]))


# ---- check --------------------------------------------------------------------------

def read_safetensors(path):
    """An independent reader: (tensors by name, metadata, layout faults)."""
    import numpy as np
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n].decode("utf-8"))
    meta = hdr.pop("__metadata__", {})
    faults = []
    if n % 8:
        faults.append(f"header length {n} is not a multiple of 8")
    types_ = {"F32": np.float32, "I64": np.int64, "I32": np.int32, "U8": np.uint8}
    out, spans = {}, []
    for k, v in hdr.items():
        a, z = v["data_offsets"]
        dt = np.dtype(types_[v["dtype"]])
        if a % dt.itemsize:
            faults.append(f"{k} starts at {a}, not a multiple of {dt.itemsize}")
        out[k] = np.frombuffer(b[8 + n + a:8 + n + z], dtype=dt.newbyteorder("<")).reshape(v["shape"])
        spans.append((a, z))
    spans.sort()
    pos = 0
    for a, z in spans:
        if a != pos:
            faults.append(f"hole or overlap at {pos}")
        pos = z
    if 8 + n + pos != len(b):
        faults.append("trailing bytes")
    return out, meta, faults


def check(calib, dumpdir, variant, inspect_json=None, expect=None):
    import numpy as np
    fails = 0
    label, _, variant = variant.rpartition("/")
    label = label or variant

    def t(ok, name):
        nonlocal fails
        print(("ok - " if ok else "not ok - ") + f"{label}: {name}")
        if not ok:
            fails += 1
        return ok
    x, meta, faults = read_safetensors(calib)
    t(not faults, "the file's layout is aligned and whole" + (": " + "; ".join(faults) if faults else ""))
    calls = sorted(f for f in os.listdir(dumpdir) if f.startswith("call-"))
    ran = [f for f in os.listdir(dumpdir) if f.startswith("ran-")]
    t(not ran, f"the decoder itself never ran ({len(ran)} runs)")
    d = [np.load(os.path.join(dumpdir, f)) for f in calls]
    t(len(d) == len(x["seq_lens"]), f"one sequence per forward ({len(d)} forwards, {len(x['seq_lens'])} sequences)")
    lens = [c["inputs_embeds"].shape[0] for c in d]
    t(x["seq_lens"].tolist() == lens, f"seq_lens {x['seq_lens'].tolist()} are the lengths fed")
    emb = np.concatenate([c["inputs_embeds"] for c in d])
    t(x["inputs_embeds"].shape == emb.shape and np.array_equal(x["inputs_embeds"], emb),
      "inputs_embeds equal what the model fed its decoder")
    mod = np.concatenate([c["modality"] for c in d])
    t(np.array_equal(x["modality"], mod),
      "modality labels the tokens the model put vision/audio features at "
      f"({int((mod == 1).sum())} vision, {int((mod == 2).sum())} audio)")
    rows = 1 if variant == "llava" else 3
    want = []
    for c, L in zip(d, lens):
        if "position_ids" not in c.files:
            p = np.broadcast_to(np.arange(L), (rows, L))
        else:
            p = c["position_ids"]
            p = p[:, 0, :] if p.ndim == 3 else p
            p = p[1:] if p.shape[0] == 4 else p
        want.append(p)
    want = np.concatenate(want, axis=1)
    got = x["position_ids"]
    got = got.reshape(1, -1) if got.ndim == 1 else got
    t(got.shape == want.shape and np.array_equal(got, want),
      f"position_ids ({got.shape[0]} rows) equal what the model fed its decoder")
    if variant == "llava":
        t(x["position_ids"].ndim == 1, "plain RoPE: one row of positions")
    nds = len([k for k in x if k.startswith("deepstack.")])
    if variant == "qwen3_vl":
        t(nds == 3, f"3 deepstack features ({nds})")
        for k in range(nds):
            ref = np.concatenate([c[f"deepstack_{k}"] for c in d if f"deepstack_{k}" in c.files])
            t(np.array_equal(x[f"deepstack.{k}"], ref), f"deepstack.{k} equals the feature fed, in token order")
        vm = np.concatenate([c["visual_pos_masks"][0] for c in d if "visual_pos_masks" in c.files])
        t(int(vm.sum()) == int((mod == 1).sum()), "visual_pos_masks covers the vision tokens")
    else:
        t(nds == 0, "no deepstack features")
    t(meta.get("calib_format") == "masq-calib" and meta.get("calib_version") == "1" and
      meta.get("format") == "pt" and "source" in meta, f"metadata {sorted(meta)}")
    if inspect_json is not None:
        # what `masq inspect --json` reports against what the model fed, and
        # against the counts the test expects of the stand-in's media
        j = json.load(open(inspect_json))
        t(j.get("kind") == "calib" and j.get("tokens") == len(mod) and j.get("seq_lens") == lens,
          f"masq inspect: {j.get('tokens')} tokens in sequences {j.get('seq_lens')}")
        mt = j.get("modality_tokens", {})
        t(mt == {"text": int((mod == 0).sum()), "vision": int((mod == 1).sum()), "audio": int((mod == 2).sum())},
          f"masq inspect: modality counts {mt}")
        t(j.get("position_rows") == rows, f"masq inspect: {j.get('position_rows')} position rows")
        t(j.get("deepstack") == nds, f"masq inspect: {j.get('deepstack')} deepstack features")
        for kv in (expect.split(",") if expect else []):
            k, v = kv.split("=")
            got = {"seqs": len(j.get("seq_lens", [])), "vision": mt.get("vision"), "audio": mt.get("audio"),
                   "deepstack": j.get("deepstack"), "rows": j.get("position_rows")}[k]
            t(got == int(v), f"masq inspect: {k} {got}, expected {v}")
    return fails


def main(argv):
    if len(argv) == 2 and argv[0] == "make-media":
        make_media(argv[1])
        return 0
    if 4 <= len(argv) <= 6 and argv[0] == "check":
        try:
            return 1 if check(*argv[1:]) else 0
        except Exception as e:       # a crashed checker must not pass
            print(f"not ok - {argv[3].split('/')[0]}: the checker failed: {type(e).__name__}: {e}")
            return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
