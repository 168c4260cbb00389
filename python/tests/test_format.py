"""Trace format v1 writer/reader (schemas/FORMAT.md): framing, checksums, filters, round trip."""
import os
import struct

import numpy as np
import pytest
import zstandard

from starkv_recorder import (Chunk, Step, TraceChecksumError, TraceFormatError, TraceReader, TraceWriteError,
                             TraceWriter, crc32c, crc32c_reference, make_header, trace_pb2 as pb)
from starkv_recorder.format import byte_shuffle, byte_unshuffle


def test_crc32c_matches_the_format_test_vector():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c_reference(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


def test_crc32c_package_agrees_with_the_reference_table_on_random_bytes():
    rng = np.random.default_rng(7)
    for n in (1, 3, 64, 1000):
        data = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
        assert crc32c(data) == crc32c_reference(data)


def test_byte_shuffle_puts_byte_planes_first_and_inverts():
    raw = np.array([0x0102, 0x0304, 0x0506], dtype="<u2").tobytes()  # 02 01 04 03 06 05
    assert byte_shuffle(raw, 2) == bytes([0x02, 0x04, 0x06, 0x01, 0x03, 0x05])
    assert byte_unshuffle(byte_shuffle(raw, 2), 2) == raw
    with pytest.raises(ValueError):
        byte_shuffle(b"\x00\x01\x02", 2)


def small_header(fields=None, win_rows_max=0, fidelity="full"):
    return make_header(model_id="unit-test", num_layers=2, num_query_heads=4, num_kv_heads=2, head_dim=8,
                       hidden_size=32, vocab_size=100, intermediate_size=64, fidelity=fidelity, fields=fields,
                       window_sizes=(2, 4), win_rows_max=win_rows_max)


def one_step(idx, L=10, rng=None, with_prev_image=True, win_dtype=np.float32):
    rng = rng or np.random.default_rng(idx)
    images = [pb.ImageEntry(span_start=1, span_end=3, grid_t=1, grid_h=1, grid_w=2, frame_age=1),
              pb.ImageEntry(span_start=4, span_end=8, grid_t=1, grid_h=2, grid_w=2, frame_age=0)]
    if not with_prev_image:
        images = images[1:]
        images[0].frame_age = 0
    V = sum(i.span_end - i.span_start for i in images)
    Vprev = V - 4
    chunks = []
    for layer in range(2):
        chunks += [Chunk("win_sum", layer, rng.random((2, 4, L)).astype(win_dtype)),
                   Chunk("hid_norm", layer, rng.random(V).astype(np.float32)),
                   Chunk("colsum_all", layer, rng.random((4, L)).astype(np.float32)),
                   Chunk("colsum_postvis", layer, rng.random((4, L)).astype(np.float32)),
                   Chunk("count_gt_001", layer, rng.integers(0, 50, 4).astype(np.int64)),
                   Chunk("n_valid", layer, np.array([L * (L + 1) // 2], dtype=np.int64)),
                   Chunk("decode_attn_sum", layer, rng.random((4, L)).astype(np.float32)),
                   Chunk("win_rows", layer, rng.random((4, 3, L)).astype(np.float16))]
        if Vprev:
            chunks.append(Chunk("guikv_resid", layer, rng.random((2, Vprev)).astype(np.float32)))
    tt = np.full(L, pb.TOKEN_TEMPLATE, np.uint8)
    for im in images:
        tt[im.span_start:im.span_end] = pb.TOKEN_VISUAL
    return Step(episode_id="ep", step_index=idx, prompt_length=L, token_types=tt,
                token_ids=np.arange(L, dtype=np.int32), images=images, chunks=chunks, generated_tokens=3,
                reset=idx == 0, step_in_episode=idx, metadata={"k": str(idx)})


@pytest.mark.parametrize("compress,shuffle", [(True, True), (False, False), (True, False)])
def test_round_trip_returns_every_value_written(tmp_path, compress, shuffle):
    path = tmp_path / "t.starkv"
    steps = [one_step(0, L=10), one_step(1, L=13, with_prev_image=False), one_step(2, L=9, win_dtype=np.float16)]
    with TraceWriter(path, small_header(win_rows_max=3), compress=compress, shuffle=shuffle) as w:
        for s in steps:
            w.write_step(s)
    r = TraceReader(path)
    assert not r.footer_missing
    assert len(r.steps) == 3 and len(r.footer.steps) == 3
    assert r.header.model.model_id == "unit-test" and list(r.header.window_sizes) == [2, 4]
    for pos, s in enumerate(steps):
        rec = r.steps[pos].record
        assert rec.prompt_length == s.prompt_length and rec.step_index == s.step_index
        assert rec.token_types == s.token_types.tobytes() and list(rec.token_ids) == list(range(s.prompt_length))
        assert rec.metadata["k"] == str(pos) and rec.reset == (pos == 0)
        for c in s.chunks:
            got = r.tensor(pos, c.field, c.layer)
            assert got.dtype == c.array.dtype and got.shape == c.array.shape
            np.testing.assert_array_equal(got, c.array)


def test_file_layout_matches_the_format_byte_for_byte(tmp_path):
    path = tmp_path / "t.starkv"
    with TraceWriter(path, small_header(win_rows_max=3)) as w:
        w.write_step(one_step(0))
    data = path.read_bytes()
    assert data[:8] == b"STARKVTR" and struct.unpack_from("<HHI", data, 8) == (1, 0, 0)
    kind, flags, length, pcrc, hcrc = struct.unpack_from("<4sIQII", data, 16)
    assert kind == b"HEAD" and flags == 0
    payload = data[40:40 + length]
    assert pcrc == crc32c(payload) and hcrc == crc32c(data[16:36])
    assert pb.TraceHeader.FromString(payload).model.num_query_heads == 4
    # trailer: footer offset, reserved, crc, magic
    foot_off, reserved, tcrc = struct.unpack_from("<QII", data, len(data) - 24)
    assert data[-8:] == b"STKV_END" and reserved == 0 and tcrc == crc32c(data[-24:-12])
    assert data[foot_off:foot_off + 4] == b"FOOT"
    # the STEP record follows HEAD; its first chunk is a zstd frame with content size and checksum
    step_off = 40 + length
    assert data[step_off:step_off + 4] == b"STEP"
    slen = struct.unpack_from("<Q", data, step_off + 8)[0]
    rec = pb.StepRecord.FromString(data[step_off + 24:step_off + 24 + slen])
    chunk_off = step_off + 24 + slen
    assert data[chunk_off:chunk_off + 4] == b"CHNK"
    d0 = rec.chunks[0]
    stored = data[chunk_off + 24:chunk_off + 24 + d0.stored_bytes]
    params = zstandard.get_frame_parameters(stored)
    assert params.has_checksum and params.content_size == d0.raw_bytes
    assert d0.crc32c == crc32c(stored) and d0.filter == pb.FILTER_BYTE_SHUFFLE and d0.codec == pb.CODEC_ZSTD
    assert TraceReader(path).footer.steps[0].offset == step_off


def test_a_flipped_payload_byte_is_reported_as_a_checksum_error(tmp_path):
    path = tmp_path / "t.starkv"
    with TraceWriter(path, small_header(win_rows_max=3)) as w:
        w.write_step(one_step(0))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(TraceChecksumError):
        TraceReader(path)


def test_a_killed_recorder_leaves_completed_steps_readable(tmp_path):
    path = tmp_path / "t.starkv"
    w = TraceWriter(path, small_header(win_rows_max=3))
    w.write_step(one_step(0))
    w.write_step(one_step(1))
    w.abort()
    assert not os.path.exists(path)  # a partial trace never appears under the final name
    path = w.temporary_path
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # tear the last step in half
        f.truncate(size - 100)
    r = TraceReader(path)
    assert r.footer_missing and len(r.steps) == 1
    np.testing.assert_array_equal(r.tensor(0, "n_valid", 1), [55])


def test_a_file_that_is_not_a_trace_is_refused(tmp_path):
    p = tmp_path / "x.starkv"
    p.write_bytes(b"NOTATRACE" * 4)
    with pytest.raises(TraceFormatError, match="bad magic"):
        TraceReader(p)
    p.write_bytes(b"STARKVTR" + struct.pack("<HHI", 2, 0, 0))
    with pytest.raises(TraceFormatError, match="major version 2"):
        TraceReader(p)


def test_writer_refuses_wrong_shapes_unknown_fields_and_reused_step_indices(tmp_path):
    w = TraceWriter(tmp_path / "t.starkv", small_header(fields=["win_sum", "hid_norm"], fidelity="core"))
    s = one_step(0)
    s.chunks = [Chunk("win_sum", 0, np.zeros((2, 4, 9), np.float32))]
    with pytest.raises(TraceWriteError, match="shape"):
        w.write_step(s)
    s.chunks = [Chunk("colsum_all", 0, np.zeros((4, 10), np.float32))]
    with pytest.raises(TraceWriteError, match="does not list"):
        w.write_step(s)
    s.chunks = [Chunk("hid_norm", 0, np.zeros(6, np.float64))]
    with pytest.raises(TraceWriteError, match="dtype f64"):
        w.write_step(s)
    s.chunks = [Chunk("hid_norm", 5, np.zeros(6, np.float32))]
    with pytest.raises(TraceWriteError, match="layer out of range"):
        w.write_step(s)
    s.chunks = [Chunk("hid_norm", 0, np.zeros(6, np.float32))]
    w.write_step(s)
    with pytest.raises(TraceWriteError, match="must increase"):
        w.write_step(s)
    w.close()
    with pytest.raises(TraceWriteError, match="closed"):
        w.write_step(one_step(5))


def test_header_refuses_unknown_fields_and_unsorted_windows(tmp_path):
    with pytest.raises(TraceWriteError, match="unknown field"):
        TraceWriter(tmp_path / "a", small_header(fields=["win_sum", "attention_everything"], fidelity="core"))
    h = small_header(win_rows_max=2)
    del h.window_sizes[:]
    h.window_sizes.extend([8, 4])
    with pytest.raises(TraceWriteError, match="ascending"):
        TraceWriter(tmp_path / "b", h)
