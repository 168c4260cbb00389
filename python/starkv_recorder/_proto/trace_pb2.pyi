from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_F16: _ClassVar[DType]
    DTYPE_BF16: _ClassVar[DType]
    DTYPE_F32: _ClassVar[DType]
    DTYPE_F64: _ClassVar[DType]
    DTYPE_I32: _ClassVar[DType]
    DTYPE_I64: _ClassVar[DType]
    DTYPE_U8: _ClassVar[DType]

class Filter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILTER_NONE: _ClassVar[Filter]
    FILTER_BYTE_SHUFFLE: _ClassVar[Filter]

class Codec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODEC_NONE: _ClassVar[Codec]
    CODEC_ZSTD: _ClassVar[Codec]

class Fidelity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FIDELITY_UNSPECIFIED: _ClassVar[Fidelity]
    FIDELITY_CORE: _ClassVar[Fidelity]
    FIDELITY_STANDARD: _ClassVar[Fidelity]
    FIDELITY_FULL: _ClassVar[Fidelity]

class TokenType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOKEN_SYSTEM: _ClassVar[TokenType]
    TOKEN_TEMPLATE: _ClassVar[TokenType]
    TOKEN_VISION_MARKER: _ClassVar[TokenType]
    TOKEN_VISUAL: _ClassVar[TokenType]
    TOKEN_INSTRUCTION: _ClassVar[TokenType]
    TOKEN_HISTORY: _ClassVar[TokenType]
    TOKEN_GENERATION_PROMPT: _ClassVar[TokenType]
DTYPE_UNSPECIFIED: DType
DTYPE_F16: DType
DTYPE_BF16: DType
DTYPE_F32: DType
DTYPE_F64: DType
DTYPE_I32: DType
DTYPE_I64: DType
DTYPE_U8: DType
FILTER_NONE: Filter
FILTER_BYTE_SHUFFLE: Filter
CODEC_NONE: Codec
CODEC_ZSTD: Codec
FIDELITY_UNSPECIFIED: Fidelity
FIDELITY_CORE: Fidelity
FIDELITY_STANDARD: Fidelity
FIDELITY_FULL: Fidelity
TOKEN_SYSTEM: TokenType
TOKEN_TEMPLATE: TokenType
TOKEN_VISION_MARKER: TokenType
TOKEN_VISUAL: TokenType
TOKEN_INSTRUCTION: TokenType
TOKEN_HISTORY: TokenType
TOKEN_GENERATION_PROMPT: TokenType

class ModelGeometry(_message.Message):
    __slots__ = ("model_id", "num_layers", "num_query_heads", "num_kv_heads", "head_dim", "hidden_size", "vocab_size", "dtype", "intermediate_size")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    NUM_QUERY_HEADS_FIELD_NUMBER: _ClassVar[int]
    NUM_KV_HEADS_FIELD_NUMBER: _ClassVar[int]
    HEAD_DIM_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_SIZE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    num_layers: int
    num_query_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    dtype: DType
    intermediate_size: int
    def __init__(self, model_id: _Optional[str] = ..., num_layers: _Optional[int] = ..., num_query_heads: _Optional[int] = ..., num_kv_heads: _Optional[int] = ..., head_dim: _Optional[int] = ..., hidden_size: _Optional[int] = ..., vocab_size: _Optional[int] = ..., dtype: _Optional[_Union[DType, str]] = ..., intermediate_size: _Optional[int] = ...) -> None: ...

class RecorderInfo(_message.Message):
    __slots__ = ("name", "version", "seed", "command_line")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    COMMAND_LINE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    seed: int
    command_line: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., seed: _Optional[int] = ..., command_line: _Optional[str] = ...) -> None: ...

class AgentLoop(_message.Message):
    __slots__ = ("attn_implementation", "vision_attn_implementation", "stored_kv_heads", "screen_width", "screen_height", "min_pixels", "max_pixels", "image_slots", "max_new_tokens", "benchmark")
    ATTN_IMPLEMENTATION_FIELD_NUMBER: _ClassVar[int]
    VISION_ATTN_IMPLEMENTATION_FIELD_NUMBER: _ClassVar[int]
    STORED_KV_HEADS_FIELD_NUMBER: _ClassVar[int]
    SCREEN_WIDTH_FIELD_NUMBER: _ClassVar[int]
    SCREEN_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MIN_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BENCHMARK_FIELD_NUMBER: _ClassVar[int]
    attn_implementation: str
    vision_attn_implementation: str
    stored_kv_heads: int
    screen_width: int
    screen_height: int
    min_pixels: int
    max_pixels: int
    image_slots: int
    max_new_tokens: int
    benchmark: str
    def __init__(self, attn_implementation: _Optional[str] = ..., vision_attn_implementation: _Optional[str] = ..., stored_kv_heads: _Optional[int] = ..., screen_width: _Optional[int] = ..., screen_height: _Optional[int] = ..., min_pixels: _Optional[int] = ..., max_pixels: _Optional[int] = ..., image_slots: _Optional[int] = ..., max_new_tokens: _Optional[int] = ..., benchmark: _Optional[str] = ...) -> None: ...

class TraceHeader(_message.Message):
    __slots__ = ("model", "recorder", "fidelity", "fields", "window_sizes", "agent", "metadata", "win_rows_max", "numerics")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RECORDER_FIELD_NUMBER: _ClassVar[int]
    FIDELITY_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SIZES_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    WIN_ROWS_MAX_FIELD_NUMBER: _ClassVar[int]
    NUMERICS_FIELD_NUMBER: _ClassVar[int]
    model: ModelGeometry
    recorder: RecorderInfo
    fidelity: Fidelity
    fields: _containers.RepeatedScalarFieldContainer[str]
    window_sizes: _containers.RepeatedScalarFieldContainer[int]
    agent: AgentLoop
    metadata: _containers.ScalarMap[str, str]
    win_rows_max: int
    numerics: str
    def __init__(self, model: _Optional[_Union[ModelGeometry, _Mapping]] = ..., recorder: _Optional[_Union[RecorderInfo, _Mapping]] = ..., fidelity: _Optional[_Union[Fidelity, str]] = ..., fields: _Optional[_Iterable[str]] = ..., window_sizes: _Optional[_Iterable[int]] = ..., agent: _Optional[_Union[AgentLoop, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., win_rows_max: _Optional[int] = ..., numerics: _Optional[str] = ...) -> None: ...

class ImageEntry(_message.Message):
    __slots__ = ("span_start", "span_end", "grid_t", "grid_h", "grid_w", "original_width", "original_height", "resized_width", "resized_height", "frame_age")
    SPAN_START_FIELD_NUMBER: _ClassVar[int]
    SPAN_END_FIELD_NUMBER: _ClassVar[int]
    GRID_T_FIELD_NUMBER: _ClassVar[int]
    GRID_H_FIELD_NUMBER: _ClassVar[int]
    GRID_W_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_WIDTH_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    RESIZED_WIDTH_FIELD_NUMBER: _ClassVar[int]
    RESIZED_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FRAME_AGE_FIELD_NUMBER: _ClassVar[int]
    span_start: int
    span_end: int
    grid_t: int
    grid_h: int
    grid_w: int
    original_width: int
    original_height: int
    resized_width: int
    resized_height: int
    frame_age: int
    def __init__(self, span_start: _Optional[int] = ..., span_end: _Optional[int] = ..., grid_t: _Optional[int] = ..., grid_h: _Optional[int] = ..., grid_w: _Optional[int] = ..., original_width: _Optional[int] = ..., original_height: _Optional[int] = ..., resized_width: _Optional[int] = ..., resized_height: _Optional[int] = ..., frame_age: _Optional[int] = ...) -> None: ...

class ChunkDescriptor(_message.Message):
    __slots__ = ("field", "layer", "dtype", "shape", "filter", "codec", "raw_bytes", "stored_bytes", "crc32c")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    RAW_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CRC32C_FIELD_NUMBER: _ClassVar[int]
    field: str
    layer: int
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    filter: Filter
    codec: Codec
    raw_bytes: int
    stored_bytes: int
    crc32c: int
    def __init__(self, field: _Optional[str] = ..., layer: _Optional[int] = ..., dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., filter: _Optional[_Union[Filter, str]] = ..., codec: _Optional[_Union[Codec, str]] = ..., raw_bytes: _Optional[int] = ..., stored_bytes: _Optional[int] = ..., crc32c: _Optional[int] = ...) -> None: ...

class StepRecord(_message.Message):
    __slots__ = ("episode_id", "step_index", "reset", "prompt_length", "generated_tokens", "token_types", "token_ids", "images", "chunks", "metadata", "step_in_episode")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    PROMPT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STEP_IN_EPISODE_FIELD_NUMBER: _ClassVar[int]
    episode_id: str
    step_index: int
    reset: bool
    prompt_length: int
    generated_tokens: int
    token_types: bytes
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    images: _containers.RepeatedCompositeFieldContainer[ImageEntry]
    chunks: _containers.RepeatedCompositeFieldContainer[ChunkDescriptor]
    metadata: _containers.ScalarMap[str, str]
    step_in_episode: int
    def __init__(self, episode_id: _Optional[str] = ..., step_index: _Optional[int] = ..., reset: _Optional[bool] = ..., prompt_length: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., token_types: _Optional[bytes] = ..., token_ids: _Optional[_Iterable[int]] = ..., images: _Optional[_Iterable[_Union[ImageEntry, _Mapping]]] = ..., chunks: _Optional[_Iterable[_Union[ChunkDescriptor, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., step_in_episode: _Optional[int] = ...) -> None: ...

class StepIndexEntry(_message.Message):
    __slots__ = ("offset", "step_index", "episode_id", "prompt_length", "length")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    offset: int
    step_index: int
    episode_id: str
    prompt_length: int
    length: int
    def __init__(self, offset: _Optional[int] = ..., step_index: _Optional[int] = ..., episode_id: _Optional[str] = ..., prompt_length: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class TraceFooter(_message.Message):
    __slots__ = ("steps", "total_raw_bytes", "total_stored_bytes", "recovered")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_RAW_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[StepIndexEntry]
    total_raw_bytes: int
    total_stored_bytes: int
    recovered: bool
    def __init__(self, steps: _Optional[_Iterable[_Union[StepIndexEntry, _Mapping]]] = ..., total_raw_bytes: _Optional[int] = ..., total_stored_bytes: _Optional[int] = ..., recovered: _Optional[bool] = ...) -> None: ...
