#!/usr/bin/python3
"""Independent oracle for Qwen2.5-VL's 3-D (M-RoPE) position ids -- image path of get_rope_index.

usage: /usr/bin/python3 ref_rope_index.py IN.json OUT.json

IN.json : {"input_ids": [...], "image_grid_thw": [[t,h,w], ...], "spatial_merge_size": 2,
           "image_token_id": 151655, "vision_start_token_id": 151652, "video_token_id": 151656}
          optional: "attention_mask": [0/1 ...] (default all ones), "tokens_per_second": 2
OUT.json: {"position_ids": [[...],[...],[...]] (3 rows x seq), "mrope_position_delta": int}

Followed: huggingface/transformers src/transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py,
Qwen2_5_VLModel.get_rope_index (stored copy @00b676f8f0489b88652a31d70751cc540dd06305, ~4.53/4.54;
the image branch is the same code as in 4.49.0 where the method lived on
Qwen2_5_VLForConditionalGeneration).  One sequence (batch of 1), pure Python ints (torch int64 there).

For an image: t_index = (arange(llm_grid_t) * second_per_grid_t(=0 for images) * tokens_per_second).long()
             = 0 for every image token (NOT arange(t) as in Qwen2-VL), h_index = row in the merged grid,
             w_index = column in the merged grid; all three offset by st_idx + text_len.
Videos are out of scope: a vision_start followed by the video token makes this oracle exit 2.
"""
import json
import sys


class OracleError(Exception):
    pass


def _int(v, what):
    if isinstance(v, bool) or not isinstance(v, int):
        raise OracleError(f"{what} must be an integer, got {v!r}")
    return v


def get_rope_index(input_ids, image_grid_thw, spatial_merge_size, image_token_id, video_token_id,
                   vision_start_token_id, attention_mask=None, tokens_per_second=2):
    """Returns (position_ids[3][seq], mrope_position_delta)."""
    seq = len(input_ids)
    if attention_mask is None:
        attention_mask_given = False
        attention_mask = [1] * seq
    else:
        attention_mask_given = True
        if len(attention_mask) != seq:
            raise OracleError("attention_mask length differs from input_ids length")

    if image_grid_thw is None:
        # `else` branch of get_rope_index (no image_grid_thw, no video_grid_thw)
        if attention_mask_given:
            pos, c = [], 0
            for m in attention_mask:
                c += m
                pos.append(c - 1 if m == 1 else 1)  # cumsum(-1) - 1, masked_fill_(mask == 0, 1)
            rows = [list(pos), list(pos), list(pos)]
            delta = max(pos) + 1 - seq
        else:
            rows = [list(range(seq)) for _ in range(3)]
            delta = 0
        return rows, delta

    # position_ids = torch.ones(3, B, L)
    position_ids = [[1] * seq for _ in range(3)]
    kept = [i for i in range(seq) if attention_mask[i] == 1]
    ids = [input_ids[i] for i in kept]  # input_ids[attention_mask[i] == 1]
    n = len(ids)

    # vision_start_indices = argwhere(input_ids == vision_start_token_id); vision_tokens = ids[vsi + 1]
    vision_tokens = []
    for j, tok in enumerate(ids):
        if tok == vision_start_token_id:
            if j + 1 >= n:
                raise OracleError("vision_start token is the last token (torch would raise IndexError)")
            vision_tokens.append(ids[j + 1])
    image_nums = sum(1 for v in vision_tokens if v == image_token_id)
    video_nums = sum(1 for v in vision_tokens if v == video_token_id)
    if video_nums > 0:
        raise OracleError("sequence contains a video (vision_start followed by video_token_id); "
                          "this oracle covers the image path only")

    input_tokens = ids
    llm_pos_ids_list = []  # list of 3 x len chunks (lists of 3 lists)
    st = 0
    image_index = 0
    remain_images, remain_videos = image_nums, video_nums

    def chunk_max(ch):
        return max(max(r) for r in ch)

    for _ in range(image_nums + video_nums):
        if image_token_id in input_tokens and remain_images > 0:
            try:
                ed_image = input_tokens.index(image_token_id, st)
            except ValueError:
                raise OracleError(f"no image token at or after position {st} (python list.index raises)")
        else:
            ed_image = len(input_tokens) + 1
        ed_video = len(input_tokens) + 1  # remain_videos == 0 here (videos refused above)
        if not ed_image < ed_video:
            raise OracleError("internal: no image found where one was counted")
        if image_index >= len(image_grid_thw):
            raise OracleError(f"image_grid_thw has {len(image_grid_thw)} entries but the sequence has "
                              f"more images (torch would raise IndexError)")
        t, h, w = image_grid_thw[image_index]
        second_per_grid_t = 0
        image_index += 1
        remain_images -= 1
        ed = ed_image

        llm_grid_t, llm_grid_h, llm_grid_w = t, h // spatial_merge_size, w // spatial_merge_size
        text_len = ed - st

        st_idx = chunk_max(llm_pos_ids_list[-1]) + 1 if len(llm_pos_ids_list) > 0 else 0
        text = [st_idx + k for k in range(text_len)]
        llm_pos_ids_list.append([list(text), list(text), list(text)])

        t_index, h_index, w_index = [], [], []
        for tt in range(llm_grid_t):
            # (expanded_range * second_per_grid_t * tokens_per_second).long() -- int64 math, = 0 for images
            tv = int(tt * second_per_grid_t * tokens_per_second)
            for hh in range(llm_grid_h):
                for ww in range(llm_grid_w):
                    t_index.append(tv)
                    h_index.append(hh)
                    w_index.append(ww)
        off = text_len + st_idx
        llm_pos_ids_list.append([[v + off for v in t_index], [v + off for v in h_index], [v + off for v in w_index]])
        st = ed + llm_grid_t * llm_grid_h * llm_grid_w

    if st < len(input_tokens):
        st_idx = chunk_max(llm_pos_ids_list[-1]) + 1 if len(llm_pos_ids_list) > 0 else 0
        text_len = len(input_tokens) - st
        text = [st_idx + k for k in range(text_len)]
        llm_pos_ids_list.append([list(text), list(text), list(text)])

    llm_positions = [[], [], []]
    for ch in llm_pos_ids_list:
        for r in range(3):
            llm_positions[r].extend(ch[r])
    if len(llm_positions[0]) != n:
        # torch: position_ids[..., i, attention_mask[i] == 1] = llm_positions -> shape mismatch error
        raise OracleError(f"positions computed for {len(llm_positions[0])} tokens but the sequence has {n} "
                          f"(image token count does not match image_grid_thw; torch would raise)")
    for r in range(3):
        for j, i in enumerate(kept):
            position_ids[r][i] = llm_positions[r][j]
    delta = max(max(r) for r in llm_positions) + 1 - seq if n > 0 else 1 - seq
    return position_ids, delta


def main(argv):
    if len(argv) != 3:
        print("usage: ref_rope_index.py IN.json OUT.json", file=sys.stderr)
        return 2
    try:
        try:
            with open(argv[1], "rb") as f:
                d = json.loads(f.read().decode("utf-8"))
        except OSError as e:
            raise OracleError(f"cannot read {argv[1]}: {e}")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise OracleError(f"{argv[1]} is not valid JSON: {e}")
        if not isinstance(d, dict):
            raise OracleError("input must be a JSON object")
        ids = d.get("input_ids")
        if not isinstance(ids, list) or not ids:
            raise OracleError("input_ids must be a non-empty list of integers")
        ids = [_int(v, "input_ids element") for v in ids]
        grid = d.get("image_grid_thw", None)
        if grid is not None:
            if not isinstance(grid, list):
                raise OracleError("image_grid_thw must be a list of [t,h,w]")
            g2 = []
            for g in grid:
                if not isinstance(g, list) or len(g) != 3:
                    raise OracleError(f"image_grid_thw entry {g!r} is not [t,h,w]")
                g2.append([_int(v, "image_grid_thw value") for v in g])
            grid = g2
        sms = _int(d.get("spatial_merge_size", 2), "spatial_merge_size")
        if sms < 1:
            raise OracleError("spatial_merge_size must be >= 1")
        img_id = _int(d.get("image_token_id", 151655), "image_token_id")
        vs_id = _int(d.get("vision_start_token_id", 151652), "vision_start_token_id")
        vid_id = _int(d.get("video_token_id", 151656), "video_token_id")
        tps = _int(d.get("tokens_per_second", 2), "tokens_per_second")
        am = d.get("attention_mask", None)
        if am is not None:
            if not isinstance(am, list) or any(v not in (0, 1) or isinstance(v, bool) for v in am):
                raise OracleError("attention_mask must be a list of 0/1")
        pos, delta = get_rope_index(ids, grid, sms, img_id, vid_id, vs_id, attention_mask=am, tokens_per_second=tps)
        out = {"position_ids": pos, "mrope_position_delta": int(delta)}
        try:
            with open(argv[2], "w") as f:
                json.dump(out, f, separators=(",", ":"))
                f.write("\n")
        except OSError as e:
            raise OracleError(f"cannot write {argv[2]}: {e}")
    except OracleError as e:
        print(f"ref_rope_index: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
