"""Measures what `starkv memory` predicts, on a real GPU: peak torch memory of one agent step of a
Qwen2.5-VL-7B-shaped model (random bf16 weights: memory does not depend on their values) with k
screenshots in context, for k = 1..K. Each step is a fresh `generate()` (greedy, N new tokens)
on a prompt laid out as `starkv memory` lays it out: 600 text tokens with one screenshot, 150
more per history screenshot, and per screenshot <|vision_start|>, the <|image_pad|> tokens of its
merged grid and <|vision_end|> (docs/memory-model.md).

Needs torch and transformers 5.x with CUDA; no network (the config is written out here).
Usage: python measure_torch.py --screen 1280x720 --screenshots 3 --attn eager --out result.json
Compare: benchmarks/gpu-memory/compare.py (README.md beside this file).
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch


def smart_resize(h: int, w: int, factor: int = 28, min_pixels: int = 78400, max_pixels: int = 12845056):
    """Qwen2.5-VL's smart_resize (docs/memory-model.md §2) with the UI-TARS-1.5 pixel bounds."""
    hb = max(factor, round(h / factor) * factor)
    wb = max(factor, round(w / factor) * factor)
    if hb * wb > max_pixels:
        beta = math.sqrt((h * w) / max_pixels)
        hb = math.floor(h / beta / factor) * factor
        wb = math.floor(w / beta / factor) * factor
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb = math.ceil(h * beta / factor) * factor
        wb = math.ceil(w * beta / factor) * factor
    return hb, wb


def build_model(attn: str):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
            num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
            rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False,
            rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}, torch_dtype="bfloat16"),
        vision_config=dict(
            depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, in_chans=3, out_hidden_size=3584,
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
            fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
        vision_end_token_id=151653, tie_word_embeddings=False)
    cfg._attn_implementation = attn
    cfg.text_config._attn_implementation = attn
    cfg.vision_config._attn_implementation = attn
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16,
                                                                attn_implementation=attn)
    model.eval()
    return model


def step_inputs(k: int, rh: int, rw: int, text: int):
    gh, gw = rh // 14, rw // 14
    n_img = gh * gw // 4
    g = torch.Generator().manual_seed(k)
    ids: list[int] = []
    text_per_gap = text // (k + 1)
    for i in range(k):
        ids += torch.randint(100, 150000, (text_per_gap,), generator=g).tolist()
        ids += [151652] + [151655] * n_img + [151653]
    ids += torch.randint(100, 150000, (text - text_per_gap * k,), generator=g).tolist()
    input_ids = torch.tensor([ids], device="cuda")
    pixel_values = torch.randn(k * gh * gw, 3 * 2 * 14 * 14, generator=g).to("cuda", torch.bfloat16)
    grid = torch.tensor([[1, gh, gw]] * k, device="cuda")
    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixel_values,
                image_grid_thw=grid), len(ids), n_img


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--screen", default="1280x720")
    ap.add_argument("--screenshots", type=int, default=3)
    ap.add_argument("--attn", default="eager", choices=["eager", "sdpa"])
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--keep-cache", action="store_true",
                    help="do not call torch.cuda.empty_cache() between steps (reserved memory carries over)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    w, h = (int(x) for x in a.screen.split("x"))
    rh, rw = smart_resize(h, w)
    t0 = time.time()
    model = build_model(a.attn)
    torch.cuda.synchronize()
    res = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "screen": a.screen,
           "resized": [rw, rh], "attn": a.attn, "keep_cache": a.keep_cache, "new_tokens": a.new_tokens,
           "weights_allocated_bytes": torch.cuda.memory_allocated(), "load_seconds": time.time() - t0, "steps": []}
    import transformers
    res["transformers"] = transformers.__version__
    for k in range(1, a.screenshots + 1):
        inputs, length, n_img = step_inputs(k, rh, rw, 600 + 150 * (k - 1))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=False)
        torch.cuda.synchronize()
        res["steps"].append({
            "screenshots": k, "prompt_tokens": length, "visual_tokens_per_image": n_img,
            "allocated_before_bytes": before, "max_allocated_bytes": torch.cuda.max_memory_allocated(),
            "max_reserved_bytes": torch.cuda.max_memory_reserved(), "generated": int(out.shape[1] - length)})
        print(json.dumps(res["steps"][-1]), flush=True)
        del out, inputs
        if not a.keep_cache:
            torch.cuda.empty_cache()
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
