"""Saved evaluation state and prompt caches, as llama-cpp-python has them.

``LlamaState`` is everything that decides what a ``Llama`` generates next: the evaluated tokens,
the logits after them, their keys and values in the KV cache, and the seed the next completion
draws from. ``Llama.save_state()`` makes one and ``load_state()`` puts it back, so what follows is
what would have followed.

``Llama.set_cache(LlamaRAMCache(...))`` or ``set_cache(LlamaDiskCache(...))`` keeps the states of
earlier completions, keyed by their tokens; a new prompt that shares a beginning with a kept
state starts from it and evaluates only the rest (a chat's next turn, the same prompt again). The RAM cache holds up to ``capacity_bytes`` and
forgets the least recently used state first; the disk cache does the same in a folder, one file
per state, written atomically, so it survives restarts.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STATE_FORMAT = "lamina-llama-state-1"


@dataclass
class LlamaState:
    """llama-cpp-python's fields; ``llama_state`` holds the KV cache of the evaluated tokens."""

    input_ids: np.ndarray
    scores: np.ndarray        # the logits after the last evaluated token (one row)
    n_tokens: int
    llama_state: bytes
    llama_state_size: int
    seed: int

    def nbytes(self) -> int:
        return self.llama_state_size + self.input_ids.nbytes + self.scores.nbytes


def pack_kv(model_id: str, keys: list[np.ndarray], values: list[np.ndarray]) -> bytes:
    """The keys and values of each layer, as one NumPy archive (no pickles)."""
    arrays = {"format": np.array(STATE_FORMAT), "model": np.array(model_id)}
    for i, (k, v) in enumerate(zip(keys, values)):
        arrays[f"k{i}"], arrays[f"v{i}"] = k, v
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack_kv(data: bytes, model_id: str, n_layers: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            if str(f["format"]) != STATE_FORMAT:
                raise ValueError("this is not a lamina Llama state")
            if str(f["model"]) != model_id:
                raise ValueError(f"this state was saved from another model ({str(f['model'])!r})")
            return [f[f"k{i}"] for i in range(n_layers)], [f[f"v{i}"] for i in range(n_layers)]
    except (KeyError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"this is not a readable lamina Llama state: {e}") from None


def longest_prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class BaseLlamaCache:
    """Prompt states by their tokens; ``cache[tokens]`` is the state whose tokens share the longest
    prefix with ``tokens`` (KeyError when none shares any), as in llama-cpp-python: the shared part
    is reused, the rest of the state is overwritten by the new tokens."""

    def __init__(self, capacity_bytes: int = 2 << 30):
        self.capacity_bytes = int(capacity_bytes)

    def _keys(self) -> list[tuple[int, ...]]:
        raise NotImplementedError

    def _find_longest_prefix_key(self, key) -> tuple[int, ...] | None:
        best, best_len = None, 0
        for k in self._keys():
            n = longest_prefix(k, key)
            if n > best_len:
                best, best_len = k, n
        return best

    def __contains__(self, key) -> bool:
        return self._find_longest_prefix_key(tuple(key)) is not None


class LlamaRAMCache(BaseLlamaCache):
    """States in memory, least recently used forgotten first past ``capacity_bytes``."""

    def __init__(self, capacity_bytes: int = 2 << 30):
        super().__init__(capacity_bytes)
        self.cache_state: OrderedDict[tuple[int, ...], LlamaState] = OrderedDict()

    @property
    def cache_size(self) -> int:
        return sum(s.nbytes() for s in self.cache_state.values())

    def _keys(self):
        return list(self.cache_state)

    def __getitem__(self, key) -> LlamaState:
        found = self._find_longest_prefix_key(tuple(key))
        if found is None:
            raise KeyError("no cached state is a prefix of these tokens")
        self.cache_state.move_to_end(found)
        return self.cache_state[found]

    def __setitem__(self, key, value: LlamaState) -> None:
        key = tuple(key)
        self.cache_state.pop(key, None)
        self.cache_state[key] = value
        while self.cache_size > self.capacity_bytes and len(self.cache_state) > 1:
            self.cache_state.popitem(last=False)


class LlamaDiskCache(BaseLlamaCache):
    """States in ``cache_dir``, one file each (written to a temporary name, then renamed), least
    recently used removed first past ``capacity_bytes``; it survives restarts."""

    def __init__(self, cache_dir: str = ".cache/llama_cache", capacity_bytes: int = 2 << 30):
        super().__init__(capacity_bytes)
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def _file(self, key: tuple[int, ...]) -> Path:
        return self.cache_dir / (hashlib.sha256(np.asarray(key, np.int64).tobytes()).hexdigest() + ".npz")

    def _entries(self) -> list[Path]:
        return sorted(self.cache_dir.glob("*.npz"))

    def _keys(self):
        keys = []
        for path in self._entries():
            try:
                with np.load(path, allow_pickle=False) as f:
                    keys.append(tuple(int(t) for t in f["key"]))
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                continue  # a damaged entry is skipped (and replaced when that prompt is saved again)
        return keys

    @property
    def cache_size(self) -> int:
        return sum(p.stat().st_size for p in self._entries())

    def __getitem__(self, key) -> LlamaState:
        found = self._find_longest_prefix_key(tuple(key))
        if found is None:
            raise KeyError("no cached state is a prefix of these tokens")
        path = self._file(found)
        with np.load(path, allow_pickle=False) as f:
            state = LlamaState(input_ids=f["input_ids"].copy(), scores=f["scores"].copy(),
                               n_tokens=int(f["n_tokens"]), llama_state=f["llama_state"].tobytes(),
                               llama_state_size=int(f["llama_state"].size), seed=int(f["seed"]))
        os.utime(path)  # most recently used
        return state

    def __setitem__(self, key, value: LlamaState) -> None:
        from lamina.gguf.writer import write_atomically

        write_atomically(str(self._file(tuple(key))), lambda f: np.savez(
            f, key=np.asarray(key, np.int64), input_ids=value.input_ids, scores=value.scores, n_tokens=value.n_tokens,
            llama_state=np.frombuffer(value.llama_state, np.uint8), seed=value.seed))
        entries = sorted(self._entries(), key=lambda p: p.stat().st_mtime_ns)
        total = sum(p.stat().st_size for p in entries)
        while total > self.capacity_bytes and len(entries) > 1:
            oldest = entries.pop(0)
            total -= oldest.stat().st_size
            oldest.unlink()


LlamaCache = LlamaRAMCache  # llama-cpp-python's older name
