"""Compile the kernels ahead of the first run: ``python -m lamina.kernels.warm [MODEL.gguf ...]``.

The set-up command runs this once, so the first ``lamina`` command after installing starts as fast
as any later one. Each model given (by default the three test models, when they are fetched) is
run the ways a user runs it — a prompt in one batch, a longer one through the tiled attention,
tokens one at a time, a cache past the 512 cells where one query's attention is split — which
compiles, for this CPU's kernel family, every kernel those models' weight types need; Numba keeps
them in the family's cache folder.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def warm(paths: list[Path]) -> None:
    import numpy as np

    from lamina.kernels import compile_notice, family
    from lamina.llama import Llama

    compile_notice.enable()
    print(family.describe(), file=sys.stderr)
    for path in paths:
        start = time.monotonic()
        llm = Llama(str(path), n_ctx=768, n_batch=768, n_ubatch=512, verbose=False)
        rng = np.random.default_rng(0)
        for n_prompt in (5, 70, 600):
            llm.reset()
            llm.eval(rng.integers(0, llm.n_vocab(), n_prompt).tolist())
            for _ in range(2):
                llm.eval([int(np.argmax(llm.logits()))])
        llm.close()
        print(f"warmed for {path.name} in {time.monotonic() - start:.1f} s", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        paths = [Path(p) for p in argv]
    else:
        from lamina.testing.models import MODEL_NAMES, model_path

        paths = [p for p in (model_path(name) for name in MODEL_NAMES) if p.exists()]
    if not paths:
        print("no models to warm the kernels with: give GGUF files", file=sys.stderr)
        return 1
    warm(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
