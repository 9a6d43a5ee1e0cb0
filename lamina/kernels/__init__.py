"""The one place that knows how to multiply by a weight of a given ggml type.

Model code builds :class:`Linear` layers from tensors and calls them; which kernel
runs is decided here by the tensor's type and the number of input rows, so a new
kernel never touches a model file. Which family of kernels (AVX-512, AVX2, generic) compiles is
decided once, first (:mod:`.family`).
"""

from . import family  # noqa: F401  (sets Numba's target and cache before any kernel compiles)

__all__ = ["Linear", "LinearStack", "embedding_rows", "fused_linear", "rows_alone", "rows_computed_alone",
           "set_num_threads"]


def __getattr__(name):
    # the kernels load on first use, so `lamina.kernels.family` alone (lamina quantize) stays light
    if name in __all__:
        from . import linear

        return getattr(linear, name)
    raise AttributeError(f"module 'lamina.kernels' has no attribute {name!r}")
