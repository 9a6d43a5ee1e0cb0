"""GGUF, llama.cpp's model file format: validated memory-mapped reading and atomic writing.

>>> f = lamina.gguf.read("model.gguf")
>>> f.get_str("general.architecture"), f.tensors["token_embd.weight"].type
"""

from .constants import ValueType
from .file_types import FILE_TYPE_NAMES, file_type_name, guess_file_type
from .reader import GGUFError, GGUFFile, MetadataValue, TensorInfo, read, read_one, tensor_nbytes
from .types import GGML_TYPES, GGML_TYPES_BY_NAME, QK_K, GGMLType, ggml_type
from .writer import NewTensor, tensor_from_array, write, write_atomically

__all__ = [
    "FILE_TYPE_NAMES", "file_type_name", "guess_file_type", "GGML_TYPES", "GGML_TYPES_BY_NAME", "GGMLType", "GGUFError", "GGUFFile", "MetadataValue", "NewTensor",
    "QK_K", "TensorInfo", "ValueType", "ggml_type", "read", "read_one", "tensor_from_array", "tensor_nbytes", "write",
    "write_atomically",
]
