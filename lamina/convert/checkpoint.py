"""A Hugging Face checkpoint folder: its ``config.json`` and the tensors of its safetensors files.

The files are found as ``convert_hf_to_gguf.py`` finds them: the parts listed by
``model.safetensors.index.json`` when there is one (and then every listed tensor must be in
them, and nothing else), otherwise every ``model*.safetensors`` file, in name order; within a
file, tensors come in name order. That order is the order of the tensors in the GGUF file.

Each file's header is checked by the ``safetensors`` package (offsets inside the file, no
overlaps, shapes that fit their bytes); the data is memory-mapped and a tensor is read only
when it is converted, so converting a model needs memory for one tensor at a time, not for the
model. ``safetensors`` cannot hand BF16 to NumPy and does not say where a tensor's bytes are, so
the mapping itself is made here from the header it validated.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# safetensors dtype -> (NumPy dtype of the stored values, whether it is kept as is)
_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit


class ConvertError(ValueError):
    """A checkpoint cannot be converted; the message says what is wrong and where."""


@dataclass(frozen=True)
class CheckpointTensor:
    """One tensor of a checkpoint, not yet read: where its bytes are and what they are."""

    name: str
    dtype: str              # safetensors' name: F32, F16, BF16 ...
    shape: tuple[int, ...]  # PyTorch order (rows last-but-one, row length last)
    path: Path
    offset: int             # of the first byte in the file
    nbytes: int

    def load(self) -> np.ndarray:
        """The values as the converter computes with them: F32 and F16 as stored, anything else as F32."""
        if self.nbytes == 0:
            return np.zeros(self.shape, dtype=np.float16 if self.dtype == "F16" else np.float32)
        stored = np.memmap(self.path, dtype=_DTYPES[self.dtype], mode="r", offset=self.offset,
                           shape=(self.nbytes // _DTYPES[self.dtype].itemsize,))
        if self.dtype in ("F32", "F16"):
            values = stored
        elif self.dtype == "BF16":
            values = (stored.astype(np.uint32) << 16).view(np.float32)
        else:
            values = stored.astype(np.float32)
        return values.reshape(self.shape)


def load_config(folder: Path) -> dict[str, Any]:
    """``config.json`` as a dict, with a multimodal model's ``text_config`` lifted to the top."""
    path = folder / "config.json"
    if not path.is_file():
        raise ConvertError(f"{folder}: no config.json (is this a Hugging Face model folder?)")
    config = _read_json(path)
    if not isinstance(config, dict):
        raise ConvertError(f"{path}: expected a JSON object, got {type(config).__name__}")
    for nested in ("llm_config", "lm_config", "language_config"):
        if isinstance(config.get(nested), dict):
            config["text_config"] = config[nested]
    return config


def read_json_file(path: Path) -> Any:
    """A JSON file of the checkpoint, or a ConvertError naming it."""
    return _read_json(path)


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConvertError(f"{path}: cannot be read as JSON: {e}") from None


def checkpoint_tensors(folder: Path) -> dict[str, CheckpointTensor]:
    """Every tensor of the checkpoint in ``folder``, in the order the converter visits them."""
    index_path = folder / "model.safetensors.index.json"
    expected: set[str] | None = None
    if index_path.is_file():
        index = _read_json(index_path)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ConvertError(f"{index_path}: no 'weight_map' of tensor name -> file name")
        parts = sorted(set(weight_map.values()))
        expected = set(weight_map)
    else:
        parts = sorted(n for n in os.listdir(folder) if n.startswith("model") and n.endswith(".safetensors"))
    if not parts:
        bins = sorted(n for n in os.listdir(folder) if n.endswith(".bin") or n.endswith(".pth"))
        hint = f" (it has {', '.join(bins[:3])}: PyTorch pickles are not read, convert them to safetensors)" if bins else ""
        raise ConvertError(f"{folder}: no model*.safetensors files{hint}")
    tensors: dict[str, CheckpointTensor] = {}
    for part in parts:
        path = folder / part
        if os.path.basename(part) != part or not path.is_file():
            raise ConvertError(f"{folder}: the model part {part!r} is missing" if os.path.basename(part) == part
                               else f"{index_path}: the part name {part!r} is not a file name in the folder")
        for tensor in _file_tensors(path):
            if tensor.name in tensors:
                raise ConvertError(f"{path}: tensor {tensor.name!r} is also in {tensors[tensor.name].path.name}")
            tensors[tensor.name] = tensor
    if expected is not None and expected != set(tensors):
        missing = sorted(expected - set(tensors))
        extra = sorted(set(tensors) - expected)
        raise ConvertError(f"{index_path}: the weight map and the parts disagree: "
                           + "; ".join(p for p in (f"missing from the parts: {_names(missing)}" if missing else "",
                                                   f"not in the weight map: {_names(extra)}" if extra else "") if p))
    return tensors


def _names(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _file_tensors(path: Path) -> list[CheckpointTensor]:
    """The tensors of one safetensors file, in name order, its header validated first."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            names = list(f.keys())
    except (SafetensorError, OSError, ValueError) as e:
        raise ConvertError(f"{path}: not a valid safetensors file: {e}") from None
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > MAX_HEADER_BYTES:
            raise ConvertError(f"{path}: a header of {header_len} bytes is more than safetensors allows")
        header = json.loads(f.read(header_len))
    data_start = 8 + header_len
    tensors = []
    for name in sorted(names):
        entry = header[name]
        dtype = entry["dtype"]
        if dtype not in _DTYPES:
            raise ConvertError(f"{path}: tensor {name!r} is stored as {dtype}, which lamina convert does not read "
                               f"(it reads {', '.join(sorted(_DTYPES))})")
        begin, end = entry["data_offsets"]
        tensors.append(CheckpointTensor(name, dtype, tuple(int(d) for d in entry["shape"]), path,
                                        data_start + begin, end - begin))
    return tensors
