"""Saved slots: a slot's cached tokens with their keys and values, in files under ``--slot-save-path``.

File names come from clients, so they are confined: one plain name (letters, digits,
``._-``, at most 255 bytes, not ``.``/``..``, no separators, no leading dot), and the
resolved path (symlinks followed) must stay inside the folder. Files are written to a
temporary name and renamed over the destination, so a failed save never leaves half a file,
and read back with NumPy's loader with pickles off.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile

import numpy as np

from .errors import ServerError, invalid_request

FORMAT = "lamina-slot-1"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


def slot_path(folder: str, filename) -> str:
    """The file for a client's ``filename`` under ``folder``, or 400 saying why the name is refused."""
    if not isinstance(filename, str) or not filename:
        raise invalid_request("'filename' must be a non-empty string")
    if len(filename.encode("utf-8", "surrogatepass")) > 255:
        raise invalid_request("'filename' is longer than 255 bytes")
    if filename in (".", "..") or not _NAME.fullmatch(filename) or ".." in filename:
        raise invalid_request(f"'filename' {filename[:80]!r} is not a plain file name (letters, digits and ._- only, "
                              "not starting with a dot, no '..', no folders)")
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, filename))
    if os.path.dirname(path) != root:
        raise invalid_request(f"'filename' {filename!r} leads outside the slot save folder")
    if os.path.exists(path) and not os.path.isfile(path):
        raise invalid_request(f"'filename' {filename!r} names something in the slot save folder that is not a file")
    return path


def save(path: str, model_id: str, tokens: list[int], keys: list[np.ndarray], values: list[np.ndarray]) -> int:
    """Write atomically; return the bytes written."""
    folder = os.path.dirname(path)
    arrays = {"format": np.array(FORMAT), "model": np.array(model_id), "tokens": np.asarray(tokens, np.int32)}
    for i, (k, v) in enumerate(zip(keys, values)):
        arrays[f"k{i}"] = k
        arrays[f"v{i}"] = v
    fd, tmp = tempfile.mkstemp(prefix=".slot-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return os.path.getsize(path)


def load(path: str, model_id: str, n_layers: int) -> tuple[list[int], list[np.ndarray], list[np.ndarray], int]:
    """Read a saved slot; refuse a file that is not one, or was saved from another model."""
    if not os.path.isfile(path):
        raise ServerError(f"no saved slot named {os.path.basename(path)!r}", "not_found_error")
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["format"]) != FORMAT:
                raise invalid_request(f"{os.path.basename(path)!r} is not a lamina slot file")
            if str(f["model"]) != model_id:
                raise invalid_request(f"{os.path.basename(path)!r} was saved from another model ({str(f['model'])!r})")
            tokens = [int(t) for t in f["tokens"]]
            keys = [f[f"k{i}"] for i in range(n_layers)]
            values = [f[f"v{i}"] for i in range(n_layers)]
    except ServerError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise invalid_request(f"{os.path.basename(path)!r} is not a readable lamina slot file: {e}") from None
    return tokens, keys, values, os.path.getsize(path)
