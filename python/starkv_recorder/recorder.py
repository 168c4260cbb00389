"""Live-model recorder: wraps the generate() calls of a Hugging Face Qwen2.5-VL (UI-TARS) or
Qwen2 (OpenCUA language model) agent and writes one trace step per call (docs/algorithms.md §10).

    with Recorder("run.starkv", model, processor, fields="standard") as rec:
        for screenshot, instruction in episode:
            inputs = processor(text=[...], images=[...], return_tensors="pt")
            model.generate(**inputs, max_new_tokens=128)

How it hooks the model (transformers 5.x): every decoder layer's attention module
(`layer.self_attn`, with `layer_idx`, `q_proj`, `k_proj`) dispatches its attention kernel through
the `ALL_ATTENTION_FUNCTIONS` global of its modeling file. While recording, that global is replaced
by a proxy whose `get_interface` returns the model's own kernel (eager, sdpa, flash_attention_2,
...) wrapped so that, for the recorded modules, it also sees the post-RoPE queries [1, H, q, d] and
the cache-updated keys [1, Hkv, k, d]. A forward pre-hook on each attention module keeps its input
(the hidden states after the layer's input RMSNorm). At prefill (q = k = L) the recorder computes
the layer's fields itself (`fields.compute_layer_fields`; independent of the kernel); at decode
(q = 1) it adds the token's full-cache attention to `decode_attn_sum`. `model.generate` is
wrapped on the instance to delimit steps. Leaving the `with` block restores all of it.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Any, Mapping, Sequence

import numpy as np

from ._proto import trace_pb2 as pb
from .errors import RecorderError
from .fields import (DEFAULT_WINDOW_SIZES, NUMERICS, DecodeAttentionSum, compute_layer_fields, fidelity_of,
                     resolve_fields)
from .format import (DECODE_ATTN_SUM, GUIKV_RESID, Chunk, Step, TraceWriter, make_header)
from .tokens import SpecialTokens, image_entries, image_spans, post_vision_start, token_types

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

_TORCH_DTYPE_TO_TRACE = {"torch.bfloat16": pb.DTYPE_BF16, "torch.float16": pb.DTYPE_F16,
                         "torch.float32": pb.DTYPE_F32, "torch.float64": pb.DTYPE_F64}


def find_attention_layers(model) -> list:
    """The language model's attention modules, indexed by decoder layer (`layer.self_attn` of every
    module that also has an `input_layernorm`; vision blocks use `.attn` and are not matched)."""
    found = {}
    for m in model.modules():
        attn = getattr(m, "self_attn", None)
        if attn is None or not hasattr(m, "input_layernorm"):
            continue
        idx = getattr(attn, "layer_idx", None)
        if idx is None or not hasattr(attn, "q_proj") or not hasattr(attn, "k_proj"):
            raise RecorderError(f"decoder attention {type(attn).__name__} has no layer_idx/q_proj/k_proj; "
                                f"only Qwen2.5-VL / Qwen2-style attention modules are supported")
        if idx in found:
            raise RecorderError(f"two decoder attention modules claim layer {idx}")
        found[int(idx)] = attn
    if not found:
        raise RecorderError(f"{type(model).__name__}: no decoder layers with self_attn/input_layernorm found")
    if sorted(found) != list(range(len(found))):
        raise RecorderError(f"decoder layer indices {sorted(found)} are not 0..{len(found) - 1}")
    return [found[i] for i in range(len(found))]


def text_config(model):
    cfg = model.config
    return getattr(cfg, "text_config", None) or cfg


class _DispatchProxy:
    """Stands in for a modeling file's ALL_ATTENTION_FUNCTIONS while a Recorder is active."""

    def __init__(self, real, recorder: "Recorder"):
        self._real = real
        self._recorder = recorder
        self.active = True

    def get_interface(self, name, default):
        return self._wrap(self._real.get_interface(name, default))

    def __getitem__(self, name):
        return self._wrap(self._real[name])

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __contains__(self, name):
        return name in self._real

    def _wrap(self, fn):
        proxy = self

        def recorded_attention(module, query, key, value, attention_mask, *args, **kwargs):
            out = fn(module, query, key, value, attention_mask, *args, **kwargs)
            if proxy.active:
                proxy._recorder._observe(module, query, key, kwargs.get("scaling"))
            return out

        return recorded_attention


class _StepState:
    def __init__(self, L: int, spans, e_star: int, num_layers: int):
        self.L = L
        self.spans = spans
        self.e_star = e_star
        self.layer_fields: list[dict | None] = [None] * num_layers
        self.decode: list[DecodeAttentionSum | None] = [None] * num_layers
        self.hidden: dict[int, Any] = {}


class Recorder:
    """Records every `model.generate()` call inside the `with` block as one trace step.

    Args:
      path: trace file to write (overwritten).
      model: a transformers Qwen2.5-VL (e.g. UI-TARS-1.5-7B) or Qwen2-based model.
      processor: its processor (or tokenizer); used for the special-token ids and image geometry.
      fields: "core", "standard" (default), "full" or a list of catalog field names.
      window_sizes: windows of win_sum (default 8, 16, 32, 64).
      win_rows_max: W of win_rows (full fidelity only).
      episode_id: episode of the first step; `new_episode()` starts another.
      special_tokens: override the ChatML / vision token ids (e.g. for OpenCUA's media tokens).
      screen_size, image_slots, max_new_tokens, benchmark: AgentLoop facts for the header.
      chunk_rows: query rows per chunk of the all-row scoring pass (memory bound).
      numerics: "fp32" (default) or "bf16-reference": compute win_sum, colsum_postvis and hid_norm
        with the reference kernels' bf16 dtype flow (docs/algorithms.md §1.5); written to the
        header so that `starkv replay` follows the same numerics.
    """

    def __init__(self, path: str | os.PathLike, model, processor, *, fields: str | Sequence[str] = "standard",
                 window_sizes: Sequence[int] = DEFAULT_WINDOW_SIZES, win_rows_max: int = 8,
                 episode_id: str = "episode-0", special_tokens: SpecialTokens | None = None,
                 model_id: str | None = None, screen_size: tuple[int, int] | None = None,
                 image_slots: int = 0, max_new_tokens: int = 0, benchmark: str = "",
                 chunk_rows: int = 512, win_sum_dtype: str = "f32", compress: bool = True,
                 metadata: Mapping[str, str] | None = None, command_line: str = "",
                 numerics: str = "fp32"):
        if torch is None:
            raise RecorderError("the recorder needs torch: pip install 'starkv-recorder[torch]'")
        self.path = os.fspath(path)
        self.model = model
        self.processor = processor
        self.fields = resolve_fields(fields)
        self.fidelity = fields if isinstance(fields, str) else fidelity_of(self.fields)
        self.window_sizes = tuple(int(w) for w in window_sizes)
        self.win_rows_max = int(win_rows_max) if "win_rows" in self.fields else 0
        if win_sum_dtype not in ("f32", "f16"):
            raise RecorderError(f"win_sum_dtype {win_sum_dtype!r}: use 'f32' or 'f16'")
        self._win_sum_dtype = np.float32 if win_sum_dtype == "f32" else np.float16
        self.chunk_rows = int(chunk_rows)
        if numerics not in NUMERICS:
            raise RecorderError(f"numerics {numerics!r}: use one of {', '.join(NUMERICS)}")
        self.numerics = numerics
        self.layers = find_attention_layers(model)
        self._layer_of = {id(m): i for i, m in enumerate(self.layers)}
        tok = getattr(processor, "tokenizer", processor)
        self.special = special_tokens or SpecialTokens.from_tokenizer(tok)
        ip = getattr(processor, "image_processor", None)
        vcfg = getattr(model.config, "vision_config", None)
        self.merge_size = int(getattr(ip, "merge_size", None) or getattr(vcfg, "spatial_merge_size", 2))
        self.patch_size = int(getattr(ip, "patch_size", None) or getattr(vcfg, "patch_size", 14))
        self._episode_id = episode_id
        self._next_reset = True
        self._step_in_episode = 0
        self._step_index = 0
        self._hints: dict[str, Any] = {}
        self._state: _StepState | None = None
        self._lock = threading.Lock()
        self._patched: list[tuple[Any, Any, _DispatchProxy]] = []
        self._hooks: list = []
        self._gen_was_instance_attr = False
        self._orig_generate = None
        self._writer: TraceWriter | None = None
        self._header = self._make_header(model_id, screen_size, image_slots, max_new_tokens, benchmark,
                                         metadata, command_line or " ".join(sys.argv))
        if numerics != "fp32":
            self._header.numerics = numerics
        self._compress = compress
        self.steps_written = 0

    # ---- header ---------------------------------------------------------------------------
    def _make_header(self, model_id, screen_size, image_slots, max_new_tokens, benchmark, metadata, cmd):
        cfg = text_config(self.model)
        H = int(cfg.num_attention_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // H)
        dtype = _TORCH_DTYPE_TO_TRACE.get(str(getattr(self.model, "dtype", "")), pb.DTYPE_UNSPECIFIED)
        attn_impl = getattr(cfg, "_attn_implementation", None) or getattr(self.model.config, "_attn_implementation", "") or ""
        vcfg = getattr(self.model.config, "vision_config", None)
        agent = pb.AgentLoop(attn_implementation=str(attn_impl),
                             vision_attn_implementation=str(getattr(vcfg, "_attn_implementation", "") or ""),
                             stored_kv_heads=int(cfg.num_key_value_heads), image_slots=int(image_slots),
                             max_new_tokens=int(max_new_tokens), benchmark=benchmark)
        if screen_size:
            agent.screen_width, agent.screen_height = int(screen_size[0]), int(screen_size[1])
        ip = getattr(self.processor, "image_processor", None)
        size = getattr(ip, "size", None)

        def size_entry(key):  # dict (older) or SizeDict (transformers 5) holding the pixel bounds
            if isinstance(size, Mapping):
                return size.get(key)
            return getattr(size, key, None)
        mn = getattr(ip, "min_pixels", None) or size_entry("min_pixels") or size_entry("shortest_edge")
        mx = getattr(ip, "max_pixels", None) or size_entry("max_pixels") or size_entry("longest_edge")
        agent.min_pixels, agent.max_pixels = int(mn or 0), int(mx or 0)
        if model_id is None:
            name = getattr(self.model.config, "_name_or_path", "") or getattr(self.model.config, "model_type", "model")
            model_id = os.path.basename(str(name).rstrip("/")) or "model"
        from . import __version__
        return make_header(model_id=model_id, num_layers=int(cfg.num_hidden_layers), num_query_heads=H,
                           num_kv_heads=int(cfg.num_key_value_heads), head_dim=head_dim,
                           hidden_size=int(cfg.hidden_size), vocab_size=int(cfg.vocab_size),
                           intermediate_size=int(getattr(cfg, "intermediate_size", 0) or 0), dtype=dtype,
                           fidelity=self.fidelity, fields=self.fields, window_sizes=self.window_sizes,
                           win_rows_max=self.win_rows_max, recorder_version=__version__, command_line=cmd,
                           agent=agent, metadata=metadata)

    @property
    def header(self) -> pb.TraceHeader:
        return self._header

    # ---- step control ---------------------------------------------------------------------
    def new_episode(self, episode_id: str) -> None:
        """The next step starts episode `episode_id` (policy state resets before it)."""
        self._episode_id = episode_id
        self._next_reset = True
        self._step_in_episode = 0

    def next_step(self, *, original_sizes: Sequence[tuple[int, int]] | None = None,
                  metadata: Mapping[str, str] | None = None) -> None:
        """Hints for the next generate() call: each screenshot's (width, height) before resizing,
        in prompt order, and free-text step metadata."""
        self._hints = {"original_sizes": original_sizes, "metadata": dict(metadata or {})}

    # ---- patching -------------------------------------------------------------------------
    def __enter__(self) -> "Recorder":
        mods = {}
        for m in self.layers:
            mod = sys.modules.get(type(m).__module__)
            if mod is None or not hasattr(mod, "ALL_ATTENTION_FUNCTIONS"):
                raise RecorderError(f"{type(m).__module__}: no ALL_ATTENTION_FUNCTIONS to hook (transformers "
                                    f"5.x modeling files dispatch attention through it)")
            mods[id(mod)] = mod
        self._writer = TraceWriter(self.path, self._header, compress=self._compress)
        try:
            for mod in mods.values():
                real = mod.ALL_ATTENTION_FUNCTIONS
                proxy = _DispatchProxy(real, self)
                mod.ALL_ATTENTION_FUNCTIONS = proxy
                self._patched.append((mod, real, proxy))
            for i, m in enumerate(self.layers):
                self._hooks.append(m.register_forward_pre_hook(self._make_pre_hook(i), with_kwargs=True))
            self._gen_was_instance_attr = "generate" in vars(self.model)
            self._orig_generate = self.model.generate
            self.model.generate = self._generate
        except BaseException:
            self._unpatch()
            self._writer.abort()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._unpatch()
        if self._writer is not None:
            self._writer.close()

    def close(self) -> None:
        self.__exit__(None, None, None)

    def _unpatch(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        for mod, real, proxy in reversed(self._patched):
            proxy.active = False
            if mod.ALL_ATTENTION_FUNCTIONS is proxy:
                mod.ALL_ATTENTION_FUNCTIONS = real
        self._patched.clear()
        if self._orig_generate is not None:
            if self._gen_was_instance_attr:
                self.model.generate = self._orig_generate
            else:
                try:
                    del self.model.generate
                except AttributeError:
                    pass
            self._orig_generate = None
        self._state = None

    def _make_pre_hook(self, layer: int):
        def pre_hook(module, args, kwargs):
            st = self._state
            if st is None:
                return None
            h = kwargs.get("hidden_states", args[0] if args else None)
            if h is not None and h.dim() == 3 and h.shape[1] == st.L:
                st.hidden[layer] = h
            return None
        return pre_hook

    # ---- the step --------------------------------------------------------------------------
    def _generate(self, *args, **kwargs):
        if kwargs.get("pixel_values_videos") is not None:
            raise RecorderError("video inputs are not supported by the recorder (screenshots only)")
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            raise RecorderError("generate() was called without input_ids; the recorder needs the prompt's token ids")
        ids = input_ids.detach().cpu()
        if ids.dim() != 2 or ids.shape[0] != 1:
            raise RecorderError(f"generate() got input_ids of shape {tuple(ids.shape)}; the recorder records batch size 1")
        am = kwargs.get("attention_mask")
        if am is not None and not bool((am != 0).all()):
            raise RecorderError("attention_mask has padding; the recorder records unpadded single prompts")
        ids = ids[0].tolist()
        L = len(ids)
        where = f"{self.path}: step {self._step_index}: "
        hints, self._hints = self._hints, {}
        images = image_entries(ids, self.special, kwargs.get("image_grid_thw"), merge_size=self.merge_size,
                               patch_size=self.patch_size, original_sizes=hints.get("original_sizes"), where=where)
        spans = [(im.span_start, im.span_end) for im in images]
        e_star = post_vision_start(ids, self.special)
        self._state = _StepState(L, spans, e_star, len(self.layers))
        try:
            with torch.no_grad():
                out = self._orig_generate(*args, **kwargs)
            st = self._state
            seq = getattr(out, "sequences", out)
            generated = int(seq.shape[-1]) - L
            self._write_step(st, ids, images, generated, hints.get("metadata") or {}, where)
        finally:
            self._state = None
        return out

    def _observe(self, module, query, key, scaling) -> None:
        st = self._state
        layer = self._layer_of.get(id(module))
        if st is None or layer is None:
            return
        if query.shape[0] != 1:
            raise RecorderError(f"layer {layer}: batch size {query.shape[0]}; the recorder records batch size 1")
        qlen, klen = int(query.shape[2]), int(key.shape[2])
        with torch.no_grad():
            if qlen == klen == st.L:
                if st.layer_fields[layer] is not None:
                    raise RecorderError(f"layer {layer}: a second prefill within one generate() call")
                hidden = st.hidden.pop(layer, None)
                st.layer_fields[layer] = compute_layer_fields(
                    query[0], key[0], None if hidden is None else hidden[0], st.spans, st.e_star,
                    fields=[f for f in self.fields if f != DECODE_ATTN_SUM], window_sizes=self.window_sizes,
                    win_rows_max=self.win_rows_max, scaling=scaling, chunk_rows=self.chunk_rows,
                    win_sum_dtype=self._win_sum_dtype, numerics=self.numerics)
            elif qlen == 1 and klen > st.L:
                if DECODE_ATTN_SUM in self.fields:
                    acc = st.decode[layer]
                    if acc is None:
                        acc = st.decode[layer] = DecodeAttentionSum(query.shape[1], st.L, device=query.device)
                    acc.add(query[0], key[0], scaling)
            else:
                raise RecorderError(f"layer {layer}: attention call with {qlen} queries over {klen} keys does not fit "
                                    f"a prefill of the {st.L}-token prompt or a one-token decode (prefix caching, "
                                    f"chunked prefill and assisted decoding are not supported)")

    def _write_step(self, st: _StepState, ids, images, generated: int, metadata, where: str) -> None:
        H = self._header.model.num_query_heads
        chunks = []
        decode_tokens = 0
        for layer in range(len(self.layers)):
            f = st.layer_fields[layer]
            if f is None:
                raise RecorderError(f"{where}layer {layer} never ran its prefill attention through the hooked "
                                    f"dispatch; nothing was recorded for it")
            for name in self.fields:
                if name == DECODE_ATTN_SUM:
                    acc = st.decode[layer]
                    arr = acc.result() if acc is not None else np.zeros((H, st.L), dtype=np.float32)
                    decode_tokens = acc.tokens if acc is not None else 0
                    chunks.append(Chunk(name, layer, arr))
                elif name == GUIKV_RESID and len(images) < 2:
                    continue
                else:
                    chunks.append(Chunk(name, layer, f[name]))
        md = {"decode_forward_passes": str(decode_tokens), "post_vision_start": str(st.e_star)}
        md.update({str(k): str(v) for k, v in metadata.items()})
        step = Step(episode_id=self._episode_id, step_index=self._step_index, prompt_length=st.L,
                    token_types=token_types(ids, self.special), token_ids=np.asarray(ids, dtype=np.int32),
                    images=images, chunks=chunks, generated_tokens=max(0, generated), reset=self._next_reset,
                    step_in_episode=self._step_in_episode, metadata=md)
        assert self._writer is not None
        self._writer.write_step(step)
        self._step_index += 1
        self._step_in_episode += 1
        self._next_reset = False
        self.steps_written += 1


__all__ = ["Recorder", "find_attention_layers", "text_config"]
