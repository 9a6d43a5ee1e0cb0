"""The one place that knows how to multiply by a weight of a given ggml type.

Model code builds :class:`Linear` layers from tensors and calls them; which kernel
runs is decided here by the tensor's type and the number of input rows, so a new
kernel never touches a model file.
"""

from .linear import Linear, LinearStack, embedding_rows, fused_linear, rows_alone, rows_computed_alone, set_num_threads

__all__ = ["Linear", "LinearStack", "embedding_rows", "fused_linear", "rows_alone", "rows_computed_alone",
           "set_num_threads"]
