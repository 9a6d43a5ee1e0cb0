"""``lamina convert``: a Hugging Face checkpoint folder -> a GGUF file, as ``convert_hf_to_gguf.py`` writes it.

The output is byte for byte what llama.cpp's converter writes for the same folder and output
type: the same keys in the same order with the same types, the same tensors in the same order,
names, shapes and bytes. The steps follow the converter:

1. ``config.json`` names the architecture (:mod:`.architectures`); its values become
   ``<arch>.*`` keys.
2. Each checkpoint tensor (:mod:`.checkpoint`) is renamed and transformed, and given its GGUF
   type: F32 for norms, biases, 1-D tensors and expert routers, the output type for the rest
   (``f32``, ``f16``, ``bf16``, ``q8_0``; ``auto`` takes BF16 or F16 from the first 2-D tensor);
   a row that Q8_0 cannot hold falls back to F16.
3. ``general.*`` metadata (:mod:`.model_card`), the architecture's keys, then the tokenizer
   (:mod:`.vocab`).
4. The file is written atomically, one tensor at a time: a 7B model converts in a fraction of
   its size in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lamina.gguf.writer import DeferredTensor, write

from .architectures import Converter, converter_for
from .checkpoint import ConvertError, checkpoint_tensors, load_config
from .keys import KeyValues
from .lazy import Lazy
from .model_card import default_file_name, load_model_card, size_label

__all__ = ["ConvertError", "OUTPUT_TYPES", "convert"]

# --outtype -> (general.file_type, the ggml type of quantizable tensors)
OUTPUT_TYPES = {"f32": (0, "F32"), "f16": (1, "F16"), "bf16": (32, "BF16"), "q8_0": (7, "Q8_0")}
GGML_QUANT_VERSION = 2


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]   # NumPy order
    type: str                # ggml type name
    source: Lazy
    old_dtype: str

    def produce(self) -> np.ndarray:
        values = self.source.compute()
        if self.type == "F32":
            return np.ascontiguousarray(values, dtype=np.float32)
        if self.type == "F16":
            return np.ascontiguousarray(values).astype(np.float16)  # NumPy's rounding, as the converter's
        from lamina.quants import quantize

        rows = np.ascontiguousarray(values, dtype=np.float32).reshape(-1, self.shape[-1])
        return quantize(rows, self.type)


def convert(model_dir: str | os.PathLike, outfile: str | os.PathLike | None = None, outtype: str = "auto", *,
            vocab_only: bool = False, metadata: str | os.PathLike | None = None, model_name: str | None = None,
            log: Callable[[str], None] | None = None, progress: Callable[[int, int], None] | None = None) -> Path:
    """Convert the checkpoint in ``model_dir``; returns the path written.

    ``outfile`` may be a folder (the file is named by llama.cpp's convention), a name with
    ``{ftype}``/``{outtype}`` in it, or a plain path; by default the file goes into ``model_dir``.
    ``log`` receives one line per tensor; ``progress(done, total)`` follows the bytes written.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ConvertError(f"{folder}: not a folder (give a Hugging Face model folder)")
    if outtype not in OUTPUT_TYPES and outtype != "auto":
        raise ConvertError(f"--outtype {outtype!r}: choose one of f32, f16, bf16, q8_0, auto")
    config = load_config(folder)
    converter = converter_for(folder, config)
    tensors = checkpoint_tensors(folder)
    if outtype == "auto":
        first = next((t for t in tensors.values() if len(t.shape) >= 2), None)
        outtype = "bf16" if first is not None and first.dtype == "BF16" else "f16"
    file_type, weight_type = OUTPUT_TYPES[outtype]
    planned = [] if vocab_only else plan_tensors(converter, tensors, weight_type, log)

    total, shared, expert, experts = parameter_counts(planned)
    card = load_model_card(folder, total, Path(metadata) if metadata is not None else None, model_name)
    if card.name is None:
        card.name = folder.name
    if card.size_label is None and total > 0:
        card.size_label = size_label(total, shared, expert, experts)
    kv = KeyValues(converter.gguf_arch)
    kv.string("general.type", "model")
    card.write(kv)
    converter.set_parameters(kv, file_type)
    kv.u32("general.quantization_version", GGML_QUANT_VERSION)
    converter.set_vocab(kv)

    path = _output_path(folder, outfile, card, outtype.upper(), vocab_only)
    records = [DeferredTensor(t.name, tuple(reversed(t.shape)), t.type, t.produce) for t in planned]
    total_bytes = sum(_nbytes(t) for t in planned)
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total_bytes)

    write(path, kv.values, records, pad_without_tensors=not vocab_only, progress=step)
    return path


def plan_tensors(converter: Converter, tensors, weight_type: str, log: Callable[[str], None] | None = None
                 ) -> list[PlannedTensor]:
    """Every output tensor's name, shape and type, in file order (no weights are read)."""
    planned: list[PlannedTensor] = []
    seen: set[str] = set()
    sources = [(name, _lazy(t), t.dtype) for name, t in tensors.items()]
    extra = [(name, lazy, "F32") for name, lazy in converter.extra_tensors()]
    for name, lazy, old_dtype in extra + sources:
        name = converter.rename(name)
        if not converter.keeps(name):
            continue
        bid = next((int(part) for part in name.split(".") if part.isdecimal()), None)
        for new_name, out in converter.modify(lazy, name, bid):
            if new_name in seen:
                raise ConvertError(f"two checkpoint tensors become {new_name!r}")
            seen.add(new_name)
            gtype = _output_type(converter, new_name, out, weight_type)
            planned.append(PlannedTensor(new_name, out.shape, gtype, out, old_dtype))
            if log is not None:
                shape = ", ".join(str(d) for d in reversed(out.shape))
                log(f"{new_name + ',':<40} {old_dtype.lower()} --> {gtype}, shape = {{{shape}}}")
    converter.finish()
    return planned


def _lazy(tensor) -> Lazy:
    dtype = np.float16 if tensor.dtype == "F16" else np.float32
    return Lazy(tensor.shape, np.dtype(dtype), tensor.load)


def _output_type(converter: Converter, name: str, lazy: Lazy, weight_type: str) -> str:
    """llama.cpp's rule: norms, biases, 1-D tensors and routers stay F32; a row Q8_0 cannot hold is F16."""
    if lazy.ndim <= 1 or name.endswith("_norm.weight") or converter.always_f32(name) or not name.endswith(".weight"):
        return "F32"
    if weight_type == "Q8_0" and lazy.shape[-1] % 32:
        return "F16"
    return weight_type


def parameter_counts(planned: list[PlannedTensor]) -> tuple[int, int, int, int]:
    """(total, shared, per-expert, expert count) parameters, as gguf-py counts them for the size label."""
    total = shared = expert = expert_sum = expert_tensors = 0
    for t in planned:
        size = int(np.prod(t.shape))
        if "_exps." in t.name and len(t.shape) >= 3:
            count = t.shape[-2 if ".bias" in t.name else -3]
            expert += size // count
            expert_sum += count
            expert_tensors += 1
        else:
            shared += size
        total += size
    return total, shared, expert, (expert_sum // expert_tensors if expert_tensors else 0)


def _nbytes(t: PlannedTensor) -> int:
    from lamina.gguf.reader import tensor_nbytes
    from lamina.gguf.types import ggml_type

    return tensor_nbytes(tuple(reversed(t.shape)), ggml_type(t.type))


def _output_path(folder: Path, outfile, card, output_type: str, vocab_only: bool) -> Path:
    target = Path(outfile) if outfile is not None else folder
    if target.is_dir():
        return target / default_file_name(card, output_type, vocab_only)
    name = target.name
    try:
        name = name.format(output_type.lower(), outtype=output_type.lower(), ftype=output_type.lower(),
                           OUTTYPE=output_type, FTYPE=output_type)
    except (KeyError, IndexError, ValueError) as e:
        raise ConvertError(f"--outfile {target}: braces in the name must be {{ftype}} or {{outtype}} ({e})") from None
    return target.with_name(name)
