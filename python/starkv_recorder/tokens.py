"""Prompt layout from input_ids: token types, image spans and grids (docs/algorithms.md §1.1, §10.2).

Spans are the `<|image_pad|>` runs between `<|vision_start|>` and `<|vision_end|>` (the last one
is the current screenshot); each is checked against its `image_grid_thw` row (span length =
t*h*w / merge^2). Token types follow the ChatML layout of Qwen2.5-VL / UI-TARS prompts:
`<|im_start|>ROLE\\n ... <|im_end|>`; message text is SYSTEM (system), INSTRUCTION (user) or
HISTORY (assistant and other roles); the trailing `<|im_start|>assistant\\n` without an
`<|im_end|>` (and anything after it) is GENERATION_PROMPT; everything else is TEMPLATE.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from ._proto import trace_pb2 as pb
from .errors import RecorderError


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    """Token ids that delimit a ChatML prompt with images."""
    im_start: int
    im_end: int
    vision_start: int
    vision_end: int
    image_pad: int
    video_pad: int | None = None
    #: role name -> token ids of "ROLE\n" right after <|im_start|>
    role_headers: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)

    @staticmethod
    def from_tokenizer(tokenizer, *, vision_start: str = "<|vision_start|>", vision_end: str = "<|vision_end|>",
                       image_pad: str = "<|image_pad|>", video_pad: str = "<|video_pad|>",
                       im_start: str = "<|im_start|>", im_end: str = "<|im_end|>") -> "SpecialTokens":
        """Looks the ids up in a Hugging Face tokenizer (Qwen2.5-VL names by default; pass
        OpenCUA's `<|media_begin|>` / `<|media_end|>` / `<|media_pad|>` names for OpenCUA)."""
        def tid(tok: str) -> int:
            i = tokenizer.convert_tokens_to_ids(tok)
            if i is None or (getattr(tokenizer, "unk_token_id", None) is not None and i == tokenizer.unk_token_id):
                raise RecorderError(f"tokenizer has no token {tok!r}")
            return int(i)
        headers = {}
        for role in ("system", "user", "assistant"):
            ids = tokenizer.encode(role + "\n", add_special_tokens=False)
            headers[role] = tuple(int(x) for x in ids)
        try:
            vp = tid(video_pad)
        except RecorderError:
            vp = None
        return SpecialTokens(im_start=tid(im_start), im_end=tid(im_end), vision_start=tid(vision_start),
                             vision_end=tid(vision_end), image_pad=tid(image_pad), video_pad=vp,
                             role_headers=headers)


_ROLE_TYPE = {"system": pb.TOKEN_SYSTEM, "user": pb.TOKEN_INSTRUCTION, "assistant": pb.TOKEN_HISTORY}


def token_types(input_ids: Sequence[int], special: SpecialTokens) -> np.ndarray:
    """TokenType value (uint8) of every prompt token."""
    ids = [int(x) for x in input_ids]
    L = len(ids)
    types = np.full(L, pb.TOKEN_TEMPLATE, dtype=np.uint8)
    headers = sorted(special.role_headers.items(), key=lambda kv: -len(kv[1]))
    i = 0
    while i < L:
        if ids[i] != special.im_start:
            i += 1
            continue
        role, hlen = None, 0
        for name, h in headers:
            if h and tuple(ids[i + 1:i + 1 + len(h)]) == h:
                role, hlen = name, len(h)
                break
        if role is None:  # unknown role (e.g. "tool"): treat the one token after <|im_start|> as its name
            hlen = 1 if i + 1 < L else 0
        try:
            end = ids.index(special.im_end, i + 1)
        except ValueError:
            end = -1
        if end < 0:  # the trailing generation prompt
            types[i:] = pb.TOKEN_GENERATION_PROMPT
            break
        types[i:i + 1 + hlen] = pb.TOKEN_TEMPLATE
        types[i + 1 + hlen:end] = _ROLE_TYPE.get(role, pb.TOKEN_HISTORY)
        types[end] = pb.TOKEN_TEMPLATE
        i = end + 1
    arr = np.asarray(ids)
    types[(arr == special.vision_start) | (arr == special.vision_end)] = pb.TOKEN_VISION_MARKER
    types[arr == special.image_pad] = pb.TOKEN_VISUAL
    return types


def image_spans(input_ids: Sequence[int], special: SpecialTokens) -> list[tuple[int, int]]:
    """[start, end) of every run of `<|image_pad|>` tokens, in prompt order."""
    arr = np.asarray([int(x) for x in input_ids])
    pad = arr == special.image_pad
    spans = []
    i, L = 0, len(arr)
    while i < L:
        if pad[i]:
            j = i
            while j < L and pad[j]:
                j += 1
            spans.append((i, j))
            i = j
        else:
            i += 1
    return spans


def post_vision_start(input_ids: Sequence[int], special: SpecialTokens) -> int:
    """e*: position of the last `<|vision_end|>` (the first row of VL-Cache's post-vision window,
    GUI-KV repo `VLCacheCluster`: window = L - last_vision_index); 0 when the prompt has no image."""
    arr = np.asarray([int(x) for x in input_ids])
    where = np.nonzero(arr == special.vision_end)[0]
    return int(where[-1]) if len(where) else 0


def image_entries(input_ids: Sequence[int], special: SpecialTokens, image_grid_thw, *, merge_size: int = 2,
                  patch_size: int = 14, original_sizes: Sequence[tuple[int, int]] | None = None,
                  where: str = "") -> list:
    """`ImageEntry` of each image, checked against `image_grid_thw` (raw patch grid, one row per
    image). `original_sizes` gives each screenshot's (width, height) before resizing, if known."""
    spans = image_spans(input_ids, special)
    grids = [] if image_grid_thw is None else [tuple(int(v) for v in row) for row in np.asarray(image_grid_thw).reshape(-1, 3)]
    if len(spans) != len(grids):
        raise RecorderError(f"{where}prompt has {len(spans)} <|image_pad|> runs but image_grid_thw has "
                            f"{len(grids)} rows (videos and batched prompts are not supported)")
    if original_sizes is not None and len(original_sizes) != len(spans):
        raise RecorderError(f"{where}{len(original_sizes)} original sizes given for {len(spans)} images")
    ids = [int(x) for x in input_ids]
    out = []
    n = len(spans)
    for i, ((s, e), (t, h, w)) in enumerate(zip(spans, grids)):
        if h % merge_size or w % merge_size:
            raise RecorderError(f"{where}image {i}: grid {h}x{w} is not a multiple of merge size {merge_size}")
        gh, gw = h // merge_size, w // merge_size
        if t * gh * gw != e - s:
            raise RecorderError(f"{where}image {i}: span of {e - s} tokens but grid_thw {t}x{h}x{w} / "
                                f"{merge_size}^2 = {t * gh * gw}")
        if s == 0 or ids[s - 1] != special.vision_start or e >= len(ids) or ids[e] != special.vision_end:
            raise RecorderError(f"{where}image {i}: span [{s}, {e}) is not enclosed by vision start/end tokens")
        ow, oh = original_sizes[i] if original_sizes is not None else (0, 0)
        out.append(pb.ImageEntry(span_start=s, span_end=e, grid_t=t, grid_h=gh, grid_w=gw,
                                 original_width=int(ow), original_height=int(oh),
                                 resized_width=w * patch_size, resized_height=h * patch_size,
                                 frame_age=n - 1 - i))
    return out
