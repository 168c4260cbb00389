import os
import shutil
import subprocess

import pytest


@pytest.fixture(scope="session")
def tiny():
    """(processor, model) of the offline tiny random-weight Qwen2.5-VL (sdpa attention)."""
    from starkv_recorder.tiny import tiny_model, tiny_processor
    p = tiny_processor()
    return p, tiny_model(p, attn_implementation="sdpa")


def episode_inputs(processor, n_images, seed=0, sizes=((112, 84), (84, 112), (112, 84))):
    """Processor inputs of a UI-TARS-like prompt with n_images screenshots (history + current)."""
    from starkv_recorder.tiny import tiny_screenshot
    msgs = [{"role": "system", "content": "You are a helpful GUI agent."}]
    images = []
    for i in range(n_images):
        w, h = sizes[i % len(sizes)]
        images.append(tiny_screenshot(w, h, seed * 10 + i))
        msgs.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Open the settings menu."}]})
        if i < n_images - 1:
            msgs.append({"role": "assistant", "content": "Thought: I should click. Action: click(start_box='(12,4)')"})
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=images, return_tensors="pt"), images


def starkv_bin():
    """Path of the Swift CLI from STARKV_BIN, or None."""
    b = os.environ.get("STARKV_BIN")
    return b if b and os.path.isfile(b) and os.access(b, os.X_OK) else None


def starkv(*args, check=True):
    r = subprocess.run([starkv_bin(), *args], capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"starkv {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r
