"""A tiny random-weight Qwen2.5-VL and a matching processor, built offline (no downloads), for
tests, the overhead benchmark and trying the recorder without a GPU.

The tokenizer is a byte-level BPE trained in-process on a fixed corpus (deterministic) with the
Qwen2.5-VL special tokens; the chat template is a ChatML template with image placeholders like
Qwen2.5-VL's. Geometry: 2 decoder layers, 8 query heads, 4 KV heads (G = 2), head_dim 16.
"""
from __future__ import annotations

from .errors import RecorderError

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "system user assistant You are a helpful GUI agent. Click the button. Type the text.",
    "Thought: I should open the settings menu. Action: click(start_box='(120,45)')",
    "Open the browser and search for the weather in Paris. Scroll down. Press enter.",
    "The quick brown fox jumps over the lazy dog 0123456789 ()[]{}<>,.;:'\"!?-_=+/\\",
] * 4


def tiny_processor(max_pixels: int = 28 * 28 * 64):
    """A Qwen2_5_VLProcessor with a small trained byte-level BPE tokenizer (vocab < 512)."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast, Qwen2_5_VLProcessor
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
    except ImportError as e:  # pragma: no cover
        raise RecorderError(f"the tiny model needs transformers and tokenizers ({e})") from None
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None)
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=max_pixels, patch_size=14,
                                            merge_size=2, temporal_patch_size=2)
    video_processor = Qwen2VLVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2)
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=fast, video_processor=video_processor,
                               chat_template=CHAT_TEMPLATE)


def tiny_model(processor, *, seed: int = 0, attn_implementation: str = "sdpa", num_layers: int = 2):
    """A random-weight Qwen2_5_VLForConditionalGeneration (fp32, eval mode) matching `processor`."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = len(tok)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=num_layers,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [2, 3, 3]},
                         rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False,
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=128,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1], in_channels=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    model.config.text_config._attn_implementation = attn_implementation
    model.eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model


def tiny_screenshot(width: int, height: int, seed: int):
    """A deterministic synthetic 'screenshot' (PIL RGB image) with a few flat rectangles."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 235, dtype=np.uint8)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        x1, y1 = int(rng.integers(x0 + 4, width)), int(rng.integers(y0 + 4, height))
        img[y0:y1, x0:x1] = rng.integers(0, 255, size=3, dtype=np.uint8)
    return Image.fromarray(img)
