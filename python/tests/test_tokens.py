"""Prompt layout from input_ids: token types, spans, e*, image entries."""
import numpy as np
import pytest

from starkv_recorder import RecorderError, trace_pb2 as pb
from starkv_recorder.tokens import SpecialTokens, image_entries, image_spans, post_vision_start, token_types

# ids: 1 im_start, 2 im_end, 3 vstart, 4 vend, 5 pad, 10 "system\n", 11 "user\n", 12 "assistant\n", 20+ text
SP = SpecialTokens(im_start=1, im_end=2, vision_start=3, vision_end=4, image_pad=5,
                   role_headers={"system": (10,), "user": (11,), "assistant": (12,)})
IDS = [1, 10, 20, 21, 2, 30,                 # system message + "\n"
       1, 11, 3, 5, 5, 4, 22, 2, 30,          # user: image (2 tokens) + instruction
       1, 12, 23, 24, 2, 30,                  # assistant history
       1, 11, 3, 5, 5, 5, 5, 4, 25, 2, 30,    # user: current image (4 tokens) + instruction
       1, 12]                                 # generation prompt
T, S, VM, V, I, Hi, GP = (pb.TOKEN_TEMPLATE, pb.TOKEN_SYSTEM, pb.TOKEN_VISION_MARKER, pb.TOKEN_VISUAL,
                          pb.TOKEN_INSTRUCTION, pb.TOKEN_HISTORY, pb.TOKEN_GENERATION_PROMPT)


def test_token_types_follow_the_chatml_roles():
    expect = [T, T, S, S, T, T,
              T, T, VM, V, V, VM, I, T, T,
              T, T, Hi, Hi, T, T,
              T, T, VM, V, V, V, V, VM, I, T, T,
              GP, GP]
    assert token_types(IDS, SP).tolist() == expect


def test_spans_and_post_vision_start():
    assert image_spans(IDS, SP) == [(9, 11), (24, 28)]
    assert post_vision_start(IDS, SP) == 28
    assert post_vision_start([1, 10, 20, 2], SP) == 0


def test_image_entries_check_the_grid_and_set_frame_ages():
    grid = np.array([[1, 2, 4], [1, 4, 4]])  # raw patch grids; merged 1x2 and 2x2
    ims = image_entries(IDS, SP, grid, merge_size=2, patch_size=14, original_sizes=[(100, 50), (200, 150)])
    assert [(i.span_start, i.span_end, i.grid_h, i.grid_w, i.frame_age) for i in ims] == [(9, 11, 1, 2, 1), (24, 28, 2, 2, 0)]
    assert (ims[1].resized_width, ims[1].resized_height, ims[1].original_width) == (56, 56, 200)
    with pytest.raises(RecorderError, match="span of 4 tokens"):
        image_entries(IDS, SP, np.array([[1, 2, 4], [1, 2, 4]]))
    with pytest.raises(RecorderError, match="image_grid_thw has 1 rows"):
        image_entries(IDS, SP, np.array([[1, 2, 4]]))
