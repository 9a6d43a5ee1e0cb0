"""The ``lamina`` command: ``lamina -m MODEL -p PROMPT -n N`` generates; subcommands do the rest.

Each subcommand is one module in this package with a ``main(argv) -> int``; they are
imported only when named, so ``lamina info`` does not pay for the engine's imports.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "info": ("lamina.cli.info", "summarize a GGUF file (metadata, tensors, quantization mix)"),
    "tokenize": ("lamina.cli.tokenize", "show how a model tokenizes text, like llama-tokenize"),
    "quantize": ("lamina.cli.quantize", "quantize a GGUF model, like llama-quantize"),
    "perplexity": ("lamina.cli.perplexity", "measure perplexity on a text file, like llama-perplexity"),
    "bench": ("lamina.cli.bench", "measure prompt and generation speed, like llama-bench"),
    "serve": ("lamina.server.cli", "serve a model over HTTP with the OpenAI API, like llama-server"),
    "gguf-split": ("lamina.cli.gguf_split", "split a GGUF model into parts or merge them, like llama-gguf-split"),
    "embedding": ("lamina.cli.embedding", "embeddings of texts, like llama-embedding"),
    "pull": ("lamina.cli.pull", "download a model from the Hugging Face Hub into its cache"),
    "list": ("lamina.cli.list_models", "list the GGUF models in the Hugging Face Hub cache"),
    "convert": ("lamina.cli.convert", "convert a Hugging Face model folder to GGUF, like convert_hf_to_gguf.py"),
}
DEFAULT_COMMAND = "lamina.cli.run"
WITHOUT_KERNELS = ("info", "tokenize", "gguf-split", "pull", "list")  # never load Numba: they start in a fraction of the time


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["--version"], ["-v"]):
        print(version_text())
        return 0
    if argv and argv[0] in SUBCOMMANDS:
        if argv[0] not in WITHOUT_KERNELS:
            _initialize_numba_without_scipy()
            _announce_compilation()
        module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
        return module.main(argv[1:])
    _initialize_numba_without_scipy()
    _announce_compilation()
    module = importlib.import_module(DEFAULT_COMMAND)
    return module.main(argv)


def version_text() -> str:
    """``lamina --version``: the version, the Python stack, and which kernels run here and why."""
    import platform

    import numba
    import numpy

    from lamina import __version__
    from lamina.kernels import family

    return (f"lamina {__version__} (Python {platform.python_version()}, NumPy {numpy.__version__}, "
            f"Numba {numba.__version__}, {platform.machine()})\n{family.describe()}")


def _announce_compilation() -> None:
    from lamina.kernels import compile_notice

    compile_notice.enable()


def _initialize_numba_without_scipy() -> None:
    """Let Numba set up its NumPy support without importing SciPy.

    Numba's first compilation probes for SciPy's BLAS (it backs ``np.dot`` inside compiled code)
    and, when SciPy is installed, imports ``scipy.linalg``: 17 MB of resident memory that
    lamina's kernels never use (none calls ``np.dot``). The ``lamina`` command's process belongs
    to lamina alone, so it hides SciPy for that one import; the Python API never does this, since
    the process there is the user's.
    """
    if "scipy" in sys.modules or "numba.np.arraymath" in sys.modules:
        return
    sys.modules["scipy"] = None  # makes `import scipy...` fail for the probe
    try:
        import numba.np.arraymath  # noqa: F401  (runs the probe, once per process)
    finally:
        del sys.modules["scipy"]


def subcommand_help() -> str:
    """A block listing the subcommands, for the main command's ``--help``."""
    lines = ["subcommands (lamina COMMAND --help for each):"]
    lines += [f"  {name:<12} {about}" for name, (_, about) in SUBCOMMANDS.items()]
    return "\n".join(lines)
