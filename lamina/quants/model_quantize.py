"""Quantize a whole GGUF model the way llama-quantize does, streaming it through bounded memory.

The plan (which ggml type every tensor gets) comes from :mod:`lamina.quants.mix`;
this module cuts every tensor into chunks of rows, reads each chunk straight from
the input file (no memory map, so resident memory stays at a few chunks, not the
model), converts it to float32 and quantizes it with :func:`lamina.quants.quantize`
(importance weights from an imatrix where given) in a pool of worker threads, and
writes the results in order into a temporary file beside the output, which is
renamed into place only when everything succeeded. Anything llama-quantize
would refuse (requantizing without permission, a missing imatrix for the very low
bit types, a mismatched imatrix) is found while planning, before a byte is written.
"""

from __future__ import annotations

import os
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import lamina.quants as Q
from lamina.gguf import GGUFError, MetadataValue, ValueType, file_type_name, ggml_type, guess_file_type, read
from lamina.gguf.constants import (
    DEFAULT_ALIGNMENT,
    DEFAULT_VERSION,
    GGUF_MAGIC,
    KEY_ALIGNMENT,
    KEY_FILE_TYPE,
    KEY_QUANTIZATION_VERSION,
)
from lamina.gguf.writer import _checked_tensor, _put_string, _put_value, _typed_value, write_atomically

from .imatrix import ImportanceMatrix
from .mix import (
    FTYPE_GUESSED,
    QUANTIZATION_VERSION,
    ModelFacts,
    Recipe,
    RecipeError,
    RecipeOptions,
    Target,
    TensorChoice,
    ggml_name,
    n_dims,
    tensor_order_key,
)

SLAB_BYTES = 8 << 20  # float32 bytes converted at a time by one thread (small enough for malloc to reuse)
CHUNK_BYTES = 2 << 20  # float32 bytes per work item when several threads share the work
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")


class QuantizeError(RuntimeError):
    """The model cannot be quantized as asked; the message says why (no output file is left behind)."""


@dataclass
class QuantizeRequest:
    """Everything ``lamina quantize`` was asked to do (llama_model_quantize_params)."""

    input_path: str
    output_path: str | None  # None with dry_run
    target: Target
    nthreads: int = 0  # <= 0: all cores
    allow_requantize: bool = False
    leave_output_tensor: bool = False
    pure: bool = False
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    tensor_type_overrides: list[tuple[str, str]] = field(default_factory=list)
    imatrix: ImportanceMatrix | None = None
    imatrix_path: str | None = None
    kv_overrides: list[tuple[str, MetadataValue]] = field(default_factory=list)
    dry_run: bool = False


@dataclass
class PlannedTensor:
    choice: TensorChoice
    source_offset: int  # absolute byte offset of the input data
    out_shape: tuple[int, ...]
    importance: np.ndarray | None  # n_per_row × n_expert weights, or None

    @property
    def needs_conversion(self) -> bool:
        return self.choice.current_type != self.choice.new_type

    @property
    def in_bytes(self) -> int:
        return _nbytes(self.choice.shape, self.choice.current_type)

    @property
    def out_bytes(self) -> int:
        return _nbytes(self.choice.shape, self.choice.new_type)


@dataclass
class QuantizeReport:
    tensors: list[PlannedTensor]
    metadata: dict[str, MetadataValue]
    n_elements: int
    size_in: int
    size_out: int
    file_type: int
    n_fallback: int
    seconds: float = 0.0


def _nbytes(shape: tuple[int, ...], type_name: str) -> int:
    rows = 1
    for d in shape[1:]:
        rows *= d
    return ggml_type(type_name).row_bytes(shape[0]) * rows


def _pad(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


# -- planning -----------------------------------------------------------------------------------------------


def model_facts(f) -> ModelFacts:
    """The hyperparameters the recipe rules read, from the model's metadata."""
    try:
        arch = f.require_str("general.architecture")
        n_layer = f.require_int(f"{arch}.block_count")
        heads = f.fields.get(f"{arch}.attention.head_count")
        kv_heads = f.fields.get(f"{arch}.attention.head_count_kv")
        n_expert = int(f.get_int(f"{arch}.expert_count", 0))
    except GGUFError as e:
        raise QuantizeError(f"cannot read the model's hyperparameters: {e}") from None

    def first(field_, default):
        if field_ is None:
            return default
        value = field_.value
        if field_.type == ValueType.ARRAY:
            return int(value[0]) if len(value) else default
        return int(value)

    n_head = first(heads, 0)
    return ModelFacts(arch, int(n_layer), n_head, first(kv_heads, n_head), n_expert)


def plan(f, request: QuantizeRequest, log: Callable[[str], None] = lambda s: None) -> QuantizeReport:
    """Decide every tensor's type and the output metadata, refusing up front what llama-quantize would refuse."""
    facts = model_facts(f)
    target = request.target
    options = RecipeOptions(
        target=target,
        output_tensor_type=request.output_tensor_type,
        token_embedding_type=request.token_embedding_type,
        quantize_output_tensor=not request.leave_output_tensor,
        pure=request.pure,
        has_imatrix=bool(request.imatrix and request.imatrix.weights),
        tensor_type_overrides=list(request.tensor_type_overrides),
    )
    names = sorted(f.tensors, key=tensor_order_key)
    recipe = Recipe(facts, options, names)
    imatrix = request.imatrix.weights if options.has_imatrix else None

    planned = []
    for name in names:
        info = f.tensors[name]
        choice = recipe.choose(name, tuple(info.shape), info.type)
        if choice.fallback:
            log(f"warning: {choice.fallback}")
        importance = None
        if choice.current_type != choice.new_type:
            importance = _importance_for(choice, imatrix, log)
            if importance is None and choice.requires_imatrix and not request.dry_run:
                raise QuantizeError(
                    f"this quantization requires an importance matrix: tensor {name} would be {choice.new_type}, "
                    f"which is garbage without one (pass --imatrix FILE)")
            current = ggml_type(choice.current_type)
            if current.is_quantized and not request.allow_requantize:
                raise QuantizeError(f"requantizing from type {choice.current_type} is disabled (tensor {name}); "
                                    f"pass --allow-requantize to convert an already quantized model")
            if current.name not in ("F32", "F16", "BF16") and not current.is_quantized:
                raise QuantizeError(f"cannot dequantize/convert tensor {name} of type {current.name}")
            try:
                Q.block_format(choice.new_type)
            except (Q.QuantizationError, ImportError) as e:
                raise QuantizeError(f"tensor {name}: lamina cannot quantize to {choice.new_type}: {e}") from None
            block = ggml_type(choice.new_type).block_size
            if choice.shape[0] % block:
                raise QuantizeError(f"tensor {name}: its rows of {choice.shape[0]} values cannot be stored as "
                                    f"{ggml_name(choice.new_type)}, whose blocks hold {block} (chosen by "
                                    f"--token-embedding-type, --output-tensor-type or --tensor-type)")
        planned.append(PlannedTensor(choice, f.data_offset + info.offset, info.shape[:n_dims(info.shape)], importance))

    file_type = target.ftype
    if options.only_copy:
        existing = f.get_int(KEY_FILE_TYPE, None) if KEY_FILE_TYPE in f.fields else None
        file_type = int(existing) if existing is not None else (
            guess_file_type({t.choice.name: t.choice.current_type for t in planned}) | FTYPE_GUESSED)
    metadata = output_metadata(f, file_type, request)
    n_elements = sum(int(np.prod(t.choice.shape, dtype=np.int64)) for t in planned)
    return QuantizeReport(planned, metadata, n_elements, sum(t.in_bytes for t in planned),
                          sum(t.out_bytes for t in planned), file_type, recipe.n_fallback)


def _importance_for(choice: TensorChoice, imatrix, log) -> np.ndarray | None:
    if imatrix is None:
        return None
    weights = imatrix.get(choice.name)
    if weights is None:
        log(f"====== did not find weights for {choice.name}")
        return None
    ne2 = choice.shape[2] if len(choice.shape) > 2 else 1
    if weights.size == choice.shape[0] * ne2:
        return weights
    message = (f"imatrix size {weights.size} is different from tensor size {choice.shape[0] * ne2} "
               f"for {choice.name}")
    if choice.name in ("token_embd.weight", "per_layer_token_embd.weight"):
        log(f"====== {message}")
        return None
    raise QuantizeError(message)


def output_metadata(f, file_type: int, request: QuantizeRequest) -> dict[str, MetadataValue]:
    """The input's key-value pairs in order, then the keys llama-quantize sets (each moved to the end)."""
    md = dict(f.typed_metadata())

    def put(key: str, value: MetadataValue) -> None:
        md.pop(key, None)
        md[key] = value

    put(KEY_QUANTIZATION_VERSION, MetadataValue(QUANTIZATION_VERSION, ValueType.UINT32))
    put(KEY_FILE_TYPE, MetadataValue(int(file_type) & 0xFFFFFFFF, ValueType.UINT32))
    for key in SPLIT_KEYS:
        md.pop(key, None)
    overrides = list(request.kv_overrides)
    im = request.imatrix
    if im is not None and im.weights:
        overrides.append(("quantize.imatrix.file", MetadataValue((request.imatrix_path or "")[:127], ValueType.STRING)))
        if im.datasets:
            overrides.append(("quantize.imatrix.dataset", MetadataValue(im.datasets[0][:127], ValueType.STRING)))
        overrides.append(("quantize.imatrix.entries_count", MetadataValue(len(im.weights), ValueType.UINT32)))
        if im.chunk_count > 0:
            overrides.append(("quantize.imatrix.chunks_count", MetadataValue(im.chunk_count, ValueType.UINT32)))
    for key, value in overrides:
        put(key, value)
    return md


# -- writing ------------------------------------------------------------------------------------------------


def gguf_header(metadata: dict[str, MetadataValue], tensors: list[tuple[str, tuple[int, ...], str]],
                path: str) -> tuple[bytes, int]:
    """The header, key-value pairs and tensor index exactly as :func:`lamina.gguf.write` lays them out.

    Streaming needs the header before the data exists, which ``lamina.gguf.write``
    (taking all the data at once) cannot give; tests check the two agree byte for byte.
    Returns (header bytes padded to the alignment, alignment).
    """
    typed = {key: _typed_value(key, value) for key, value in metadata.items()}
    alignment = DEFAULT_ALIGNMENT
    if KEY_ALIGNMENT in typed:
        alignment = int(typed[KEY_ALIGNMENT].value)
    u32, u64 = struct.Struct("<I"), struct.Struct("<Q")
    header = bytearray(GGUF_MAGIC)
    header += u32.pack(DEFAULT_VERSION)
    header += u64.pack(len(tensors))
    header += u64.pack(len(typed))
    for key, value in typed.items():
        _put_string(header, key)
        header += u32.pack(value.type)
        _put_value(header, value)
    seen: set[str] = set()
    offset = 0
    for name, shape, type_name in tensors:
        shape, gtype = _checked_tensor(_Spec(name, shape, type_name), seen, path)
        seen.add(name)
        _put_string(header, name)
        header += u32.pack(len(shape))
        for d in shape:
            header += u64.pack(d)
        header += u32.pack(gtype.id)
        header += u64.pack(offset)
        offset += _pad(_nbytes(shape, gtype.name), alignment)
    header += bytes(_pad(len(header), alignment) - len(header))
    return bytes(header), alignment


@dataclass(frozen=True)
class _Spec:
    name: str
    shape: tuple[int, ...]
    type: str


def _validate(raw: np.ndarray, type_name: str, name: str) -> None:
    """ggml_validate_row_data: refuse output whose scales (or values) are NaN or infinite."""
    fmt = Q.block_format(type_name)
    if type_name in ("F32", "F16", "BF16"):
        bits = raw.view({"F32": np.uint32, "F16": np.uint16, "BF16": np.uint16}[type_name])
        exp_mask = {"F32": 0x7F800000, "F16": 0x7C00, "BF16": 0x7F80}[type_name]
        bad = np.flatnonzero((bits & exp_mask) == exp_mask)
    else:
        blocks = raw.view(fmt.block_dtype)
        bad_blocks = np.zeros(blocks.shape, dtype=bool)
        for field_name, (dt, _) in fmt.block_dtype.fields.items():
            if dt.base.kind == "f":
                values = blocks[field_name]
                bad_blocks |= ~np.isfinite(values).reshape(values.shape[0], -1).all(axis=1)
            elif type_name == "MXFP4" and field_name == "e":
                bad_blocks |= blocks[field_name] == 0xFF
        bad = np.flatnonzero(bad_blocks)
    if bad.size:
        raise QuantizeError(f"tensor {name}: quantized data validation failed: found a NaN or infinite value at "
                            f"block {int(bad[0])} of the {type_name} data (the input has non-finite values)")


def _read_exact(fd: int, buffer: np.ndarray, offset: int) -> None:
    view = memoryview(buffer).cast("B")
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise QuantizeError(f"input file ended early at byte {offset + done}")
        done += n


@dataclass(frozen=True)
class _Chunk:
    """One unit of work: some rows of one tensor (converted), or a byte range of it (copied)."""

    index: int  # tensor number in the plan
    expert: int
    first_row: int
    rows: int
    last: bool  # the tensor's final chunk


def _chunks(report: QuantizeReport, chunk_bytes: int):
    """Every tensor cut into chunks of whole rows (never across an expert, whose imatrix slice differs)."""
    for index, t in enumerate(report.tensors):
        c = t.choice
        n = c.shape[0]
        if t.needs_conversion:
            rows_per_expert = c.shape[1] if len(c.shape) > 1 else 1
            n_expert = int(np.prod(c.shape[2:], dtype=np.int64)) if len(c.shape) > 2 else 1
            step = max(1, min(rows_per_expert, chunk_bytes // (4 * n)))
        else:  # a copy: rows as they are stored, all "experts" in one run
            row_bytes = ggml_type(c.current_type).row_bytes(n)
            rows_per_expert = t.in_bytes // row_bytes if row_bytes else 0
            n_expert = 1
            step = max(1, chunk_bytes // max(1, row_bytes))
        pieces = [(e, r0, min(step, rows_per_expert - r0)) for e in range(n_expert)
                  for r0 in range(0, rows_per_expert, step)]
        if not pieces:
            pieces = [(0, 0, 0)]
        for k, (e, r0, rows) in enumerate(pieces):
            yield _Chunk(index, e, r0, rows, k == len(pieces) - 1)


def _releases_gil(type_name: str) -> bool:
    """Whether a format's kernels may run in several Python threads at once (its module says RELEASES_GIL)."""
    import importlib

    fmt = Q.block_format(type_name)
    return bool(getattr(importlib.import_module(fmt.quantize_rows.__module__), "RELEASES_GIL", False))


def _run_chunk(fd: int, t: PlannedTensor, chunk: _Chunk) -> np.ndarray:
    """Read one chunk from the input and return the bytes it becomes in the output."""
    c = t.choice
    n = c.shape[0]
    src = ggml_type(c.current_type)
    row_bytes = src.row_bytes(n)
    rows_per_expert = c.shape[1] if len(c.shape) > 1 else 1
    first = chunk.expert * rows_per_expert + chunk.first_row
    raw = np.empty(chunk.rows * row_bytes, dtype=np.uint8)
    _read_exact(fd, raw, t.source_offset + first * row_bytes)
    if not t.needs_conversion:
        return raw
    if src.name == "F32":
        x = raw.view(np.float32).reshape(chunk.rows, n)
    else:
        x = Q.dequantize(raw, src.name, (chunk.rows, n))
    importance = None
    if t.importance is not None:
        importance = t.importance[chunk.expert * n:(chunk.expert + 1) * n] if t.importance.size > n else t.importance
    q = Q.quantize(x, c.new_type, importance)
    _validate(q, c.new_type, c.name)
    return q


def _single_thread_numba() -> None:
    import numba

    numba.set_num_threads(1)


class _Writer:
    """Writes finished chunks in order: tensor data, then its padding, a log line and a progress tick."""

    def __init__(self, report: QuantizeReport, out, alignment: int, log, bar):
        self.report, self.out, self.alignment, self.log, self.bar = report, out, alignment, log, bar
        self.written = 0

    def put(self, chunk: _Chunk, data: np.ndarray) -> None:
        self.out.write(memoryview(data))
        self.written += data.nbytes
        if not chunk.last:
            return
        t = self.report.tensors[chunk.index]
        c = t.choice
        size, self.written = self.written, 0
        if size != t.out_bytes:
            raise QuantizeError(f"tensor {c.name}: wrote {size} bytes, expected {t.out_bytes}")
        self.out.write(bytes(_pad(size, self.alignment) - size))
        if self.bar is not None:
            self.bar.update(1)
            return
        line = (f"[{chunk.index + 1:4d}/{len(self.report.tensors):4d}] {c.name:<36s} - [{_shape_text(c.shape)}], "
                f"type = {ggml_name(c.current_type):>6s}, ")
        if t.needs_conversion:
            line += (f"converting to {ggml_name(c.new_type)} .. size = {t.in_bytes / 2**20:8.2f} MiB -> "
                     f"{size / 2**20:8.2f} MiB")
        else:
            line += f"size = {size / 2**20:8.3f} MiB"
        self.log(line)


def _stream(fd: int, report: QuantizeReport, writer: _Writer, nthreads: int) -> None:
    """Convert every chunk, in nthreads worker threads where the formats allow, writing results in order.

    Like llama-quantize's workers taking chunks off a shared counter, this keeps every
    core busy without a barrier per tensor; formats whose kernels hold the GIL run in
    this thread with Numba's own parallel loops instead.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    gil_free = {}

    def pooled(t: PlannedTensor) -> bool:
        if not t.needs_conversion:
            return True
        key = (t.choice.current_type, t.choice.new_type)
        if key not in gil_free:
            gil_free[key] = all(_releases_gil(name) for name in key if name != "F32")
        return gil_free[key]

    if nthreads <= 1:
        for chunk in _chunks(report, SLAB_BYTES):
            writer.put(chunk, _run_chunk(fd, report.tensors[chunk.index], chunk))
        return
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=nthreads, initializer=_single_thread_numba) as pool:
        try:
            for chunk in _chunks(report, CHUNK_BYTES):
                t = report.tensors[chunk.index]
                if pooled(t):
                    pending.append((chunk, pool.submit(_run_chunk, fd, t, chunk)))
                    while len(pending) > 2 * nthreads:
                        done, future = pending.popleft()
                        writer.put(done, future.result())
                else:
                    while pending:
                        done, future = pending.popleft()
                        writer.put(done, future.result())
                    writer.put(chunk, _run_chunk(fd, t, chunk))
            while pending:
                done, future = pending.popleft()
                writer.put(done, future.result())
        finally:
            for _, future in pending:
                future.cancel()


def _shape_text(shape: tuple[int, ...]) -> str:
    dims = list(shape) + [1] * (4 - len(shape))
    return ", ".join(f"{d:5d}" for d in dims)


def quantize_model(request: QuantizeRequest, log: Callable[[str], None] | None = None,
                   progress: bool | None = None) -> QuantizeReport:
    """Quantize ``request.input_path`` into ``request.output_path`` (atomically); return sizes and timing.

    ``log`` receives llama-quantize's per-tensor lines; ``progress`` shows a tqdm bar
    (default: when stderr is a terminal).
    """
    import numba

    log = log or (lambda s: None)
    if progress is None:
        progress = sys.stderr.isatty()
    start = time.perf_counter()
    nthreads = request.nthreads if request.nthreads and request.nthreads > 0 else (os.cpu_count() or 1)
    nthreads = max(1, min(nthreads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(nthreads)
    try:
        f = read(request.input_path)
    except GGUFError as e:
        raise QuantizeError(f"cannot read the input model: {e}") from None
    if len(f.parts) > 1:  # the quantizer reads tensor rows from one file descriptor
        f.close()
        raise QuantizeError(f"{request.input_path} is the first of {len(f.parts)} parts of a split model; merge them "
                            f"first (lamina gguf-split --merge {request.input_path} merged.gguf)")
    with f:
        try:
            report = plan(f, request, log)
        except RecipeError as e:
            raise QuantizeError(str(e)) from None
        if request.dry_run:
            for i, t in enumerate(report.tensors):
                c = t.choice
                line = (f"[{i + 1:4d}/{len(report.tensors):4d}] {c.name:<36s} - [{_shape_text(c.shape)}], "
                        f"type = {ggml_name(c.current_type):>6s}, ")
                if t.needs_conversion:
                    line += (f"size = {t.in_bytes / 2**20:8.2f} MiB -> {t.out_bytes / 2**20:8.2f} MiB "
                             f"({ggml_name(c.new_type)})")
                else:
                    line += f"size = {t.in_bytes / 2**20:8.3f} MiB"
                log(line)
            report.seconds = time.perf_counter() - start
            return report
        specs = [(t.choice.name, t.out_shape, t.choice.new_type) for t in report.tensors]
        header, alignment = gguf_header(report.metadata, specs, request.output_path)
        fd = os.open(request.input_path, os.O_RDONLY)
        try:
            def emit(out) -> None:
                out.write(header)
                bar = _progress_bar(len(report.tensors)) if progress else None
                try:
                    _stream(fd, report, _Writer(report, out, alignment, log, bar), nthreads)
                finally:
                    if bar is not None:
                        bar.close()

            write_atomically(request.output_path, emit)
        finally:
            os.close(fd)
    report.seconds = time.perf_counter() - start
    return report



def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="tensor", desc="quantizing", file=sys.stderr, dynamic_ncols=True)


def describe_file_type(file_type: int) -> str:
    return file_type_name(file_type & ~FTYPE_GUESSED) + (" (guessed)" if file_type & FTYPE_GUESSED else "")
