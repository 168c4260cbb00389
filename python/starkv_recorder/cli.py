"""`starkv-record`: run a scripted GUI-agent episode with a Hugging Face Qwen2.5-VL model directory
and record it as a StarKV trace.

Episode JSON: either a list of steps or an object
  {"episode_id": "demo", "system": "You are a GUI agent ...",
   "steps": [{"screenshot": "shot0.png", "instruction": "Open settings"}, ...]}
Paths are relative to the JSON file. Each step appends a user turn (screenshot + instruction) to
the conversation, keeps the last --image-slots screenshots (older user turns keep only their text,
as UI-TARS's history does), calls generate() once, and appends the model's answer as an assistant
turn (the history of the next step).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import StarKVError


def load_episode(path: str) -> tuple[str, str, list[dict]]:
    """(episode_id, system prompt, steps) of an episode JSON file; raises StarKVError on bad input."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise StarKVError(f"{path}: cannot read episode JSON ({e})") from None
    if isinstance(doc, list):
        doc = {"steps": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list) or not doc["steps"]:
        raise StarKVError(f"{path}: expected a non-empty list of steps or an object with 'steps'")
    base = os.path.dirname(os.path.abspath(path))
    steps = []
    for i, s in enumerate(doc["steps"]):
        if not isinstance(s, dict) or not isinstance(s.get("screenshot"), str) or not isinstance(s.get("instruction", ""), str):
            raise StarKVError(f"{path}: step {i} needs 'screenshot' (path) and 'instruction' (text)")
        shot = s["screenshot"] if os.path.isabs(s["screenshot"]) else os.path.join(base, s["screenshot"])
        if not os.path.isfile(shot):
            raise StarKVError(f"{path}: step {i}: screenshot {shot} does not exist")
        steps.append({"screenshot": shot, "instruction": s.get("instruction", "")})
    return str(doc.get("episode_id", os.path.splitext(os.path.basename(path))[0])), str(doc.get("system", "")), steps


def build_messages(system: str, turns: list[dict], image_slots: int) -> tuple[list[dict], list[int]]:
    """Chat messages for the current step and the indices (into turns) of the screenshots kept."""
    msgs = [{"role": "system", "content": system}] if system else []
    user_idx = [i for i, t in enumerate(turns) if t["role"] == "user"]
    keep = set(user_idx[-image_slots:]) if image_slots > 0 else set(user_idx)
    kept = []
    for i, t in enumerate(turns):
        if t["role"] == "user":
            content = []
            if i in keep:
                content.append({"type": "image"})
                kept.append(i)
            content.append({"type": "text", "text": t["text"]})
            msgs.append({"role": "user", "content": content})
        else:
            msgs.append({"role": "assistant", "content": [{"type": "text", "text": t["text"]}]})
    return msgs, kept


def run_episode(model, processor, episode_path: str, out_path: str, *, fields: str = "standard",
                max_new_tokens: int = 64, image_slots: int = 5, device: str = "cpu") -> int:
    """Runs the episode and writes the trace; returns the number of steps recorded."""
    from PIL import Image

    from .recorder import Recorder
    episode_id, system, steps = load_episode(episode_path)
    turns: list[dict] = []
    with Recorder(out_path, model, processor, fields=fields, episode_id=episode_id, image_slots=image_slots,
                  max_new_tokens=max_new_tokens, benchmark="starkv-record scripted episode") as rec:
        for s in steps:
            img = Image.open(s["screenshot"]).convert("RGB")
            turns.append({"role": "user", "text": s["instruction"], "image": img})
            msgs, kept = build_messages(system, turns, image_slots)
            text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            images = [turns[i]["image"] for i in kept]
            inputs = processor(text=[text], images=images, return_tensors="pt").to(device)
            rec.next_step(original_sizes=[im.size for im in images],
                          metadata={"instruction": s["instruction"], "screenshot": os.path.basename(s["screenshot"])})
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            answer = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
            turns.append({"role": "assistant", "text": answer})
        return rec.steps_written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="starkv-record", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="Hugging Face model directory (Qwen2.5-VL / UI-TARS)")
    ap.add_argument("--episode", required=True, help="episode JSON (screenshots and instructions)")
    ap.add_argument("--out", required=True, help="trace file to write")
    ap.add_argument("--fields", default="standard", choices=["core", "standard", "full"])
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--image-slots", type=int, default=5, help="screenshots kept in the prompt")
    ap.add_argument("--attn-implementation", default="sdpa", help="eager, sdpa or flash_attention_2")
    ap.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    try:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        dtype = "auto" if a.dtype == "auto" else getattr(torch, a.dtype)
        processor = AutoProcessor.from_pretrained(a.model)
        model = AutoModelForImageTextToText.from_pretrained(a.model, dtype=dtype,
                                                            attn_implementation=a.attn_implementation)
        model.to(a.device).eval()
        n = run_episode(model, processor, a.episode, a.out, fields=a.fields, max_new_tokens=a.max_new_tokens,
                        image_slots=a.image_slots, device=a.device)
    except StarKVError as e:
        print(f"starkv-record: error: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"starkv-record: error: {e}", file=sys.stderr)
        return 1
    print(f"starkv-record: wrote {n} steps to {a.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
