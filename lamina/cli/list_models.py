"""``lamina list``: the GGUF models in the Hugging Face Hub cache, with their sizes and paths (like ``ollama list``)."""

from __future__ import annotations

import argparse
import json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lamina list", description=__doc__)
    p.add_argument("--json", action="store_true", help="one JSON object per model")
    return p


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lamina.hub import cached_models, hub_cache_dir

    models = cached_models()
    if args.json:
        for m in models:
            print(json.dumps({"repo": m.repo, "file": m.file, "size": m.size, "path": str(m.path)}))
        return 0
    if not models:
        print(f"no GGUF models in {hub_cache_dir()} (get one with: lamina pull USER/REPO[:QUANT])")
        return 0
    width = max(len(f"{m.repo}/{m.file}") for m in models)
    print(f"{'MODEL':<{width}}  {'SIZE':>9}  PATH")
    for m in models:
        print(f"{m.repo + '/' + m.file:<{width}}  {human_size(m.size):>9}  {m.path}")
    return 0
