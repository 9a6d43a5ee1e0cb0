"""Models from the Hugging Face Hub: ``-hf user/repo[:QUANT]``, ``lamina pull``/``list``, ``Llama.from_pretrained``.

Downloads go through ``huggingface_hub``, the Hub's own client, so they land in its cache
(``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``; llama.cpp uses the
same), resume where a broken download stopped, show tqdm progress, and honour ``HF_TOKEN``,
``HF_ENDPOINT`` and ``HF_HUB_OFFLINE``. These are read at each call, not at import.

Which file ``user/repo:QUANT`` means is decided as llama.cpp decides it: among the repository's
GGUF model files (not ``mmproj``/``imatrix`` files), the first whose name has the tag (any case)
followed by ``.`` or ``-``; with no tag, ``Q4_K_M``, then ``Q8_0``, then the first model file.
A split model is every part of the chosen one. Each downloaded file is checked against the
sha256 the Hub lists for it before its first use, and must be a GGUF file; a file that fails
either check is removed from the cache.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TAGS = ("Q4_K_M", "Q8_0")
_SPLIT = re.compile(r"^(.+)-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubError(OSError):
    """A model could not be had from the Hub; the message is one line that says why."""


@dataclass(frozen=True)
class HubFile:
    path: str                 # in the repository
    size: int
    sha256: str | None        # the Hub's sha256 for LFS files (model weights always are)


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _token(token: str | None) -> str | bool | None:
    return token or os.environ.get("HF_TOKEN") or None


def split_repo_tag(spec: str) -> tuple[str, str]:
    """``user/repo:Q4_K_M`` -> (``user/repo``, ``Q4_K_M``); the tag may be empty."""
    repo, _, tag = spec.partition(":")
    if not _REPO.match(repo):
        raise HubError(f"{spec!r} is not a Hugging Face repository name (user/repo[:QUANT])")
    return repo, tag


# -- which files -------------------------------------------------------------------------------------

def is_model_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".gguf") and not any(k in name for k in ("mmproj", "imatrix", "mtp-", "eagle3-"))


def _split_info(path: str) -> tuple[str, int, int]:
    m = _SPLIT.match(path)
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else (path, 1, 1)


def choose_model_file(files: list[HubFile], tag: str) -> HubFile | None:
    """llama.cpp's ``find_best_model``: the first model file matching the tag (or the defaults)."""
    models = [f for f in files if is_model_file(f.path) and _split_info(f.path)[1] == 1]
    for t in ([tag] if tag else list(DEFAULT_TAGS)):
        pattern = re.compile(re.escape(t) + r"[.-]", re.IGNORECASE)
        for f in models:
            if pattern.search(f.path):
                return f
    return models[0] if models and not tag else None


def parts_of(files: list[HubFile], first: HubFile) -> list[HubFile]:
    """All parts of a split model, in order (the file alone when it is not split)."""
    prefix, _, count = _split_info(first.path)
    if count == 1:
        return [first]
    parts = sorted((f for f in files if _split_info(f.path)[0] == prefix and _split_info(f.path)[2] == count),
                   key=lambda f: _split_info(f.path)[1])
    if [_split_info(f.path)[1] for f in parts] != list(range(1, count + 1)):
        raise HubError(f"{first.path} is part 1 of {count}, but the repository does not have every part")
    return parts


# -- talking to the Hub ----------------------------------------------------------------------------

def _explain(e: Exception, repo: str, filename: str | None = None) -> HubError:
    """One clear line for each way a Hub call fails."""
    from huggingface_hub import errors

    what = f"{repo}/{filename}" if filename else repo
    # (the local-cache errors first: LocalEntryNotFoundError is also an EntryNotFoundError)
    if isinstance(e, errors.LocalEntryNotFoundError):
        return HubError(f"{what} is not in the cache and the Hub cannot be reached"
                        + (" (HF_HUB_OFFLINE is set)" if offline() else ""))
    if isinstance(e, errors.OfflineModeIsEnabled):
        return HubError(f"{what} is not in the cache, and HF_HUB_OFFLINE is set")
    if isinstance(e, errors.GatedRepoError):
        return HubError(f"{repo} is gated: accept its terms on the Hub, then give a token (HF_TOKEN or --hf-token)")
    if isinstance(e, errors.RepositoryNotFoundError):
        return HubError(f"repository {repo} was not found on the Hub (or it is private: give a token with "
                        "HF_TOKEN or --hf-token)")
    if isinstance(e, errors.RevisionNotFoundError):
        return HubError(f"{repo} has no such revision")
    if isinstance(e, errors.EntryNotFoundError):
        return HubError(f"{what} was not found on the Hub")
    if isinstance(e, errors.HfHubHTTPError):
        return HubError(f"the Hub refused {what}: {str(e).splitlines()[0]}")
    return HubError(f"could not reach the Hub for {what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def repo_files(repo: str, token: str | None = None) -> list[HubFile]:
    """The repository's files (online), or those of its cached snapshot (offline, or no network)."""
    if offline():
        return cached_repo_files(repo)
    from huggingface_hub import errors

    try:
        entries = _list_tree(repo, token)
    except errors.HfHubHTTPError as e:  # the Hub answered: no such repository, gated, ...
        raise _explain(e, repo) from None
    except Exception as e:  # noqa: BLE001 (no answer at all: fall back to the cache, as llama.cpp does)
        cached = cached_repo_files(repo)
        if cached:
            return cached
        raise _explain(e, repo) from None
    return [HubFile(e["path"], int(e.get("size", 0)), (e.get("lfs") or {}).get("oid"))
            for e in entries if e.get("type") == "file"]


def _list_tree(repo: str, token: str | None) -> list[dict]:
    """``GET /api/models/{repo}/tree/main?recursive=true``, every page, once each: with no network
    it fails at once (``HfApi`` would retry for about 20 s before the cache could be used)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    url = f"{(_endpoint() or constants.ENDPOINT).rstrip('/')}/api/models/{repo}/tree/main?recursive=true"
    headers = build_hf_headers(token=_token(token))
    entries: list[dict] = []
    while url:
        response = get_session().get(url, headers=headers, timeout=10)
        hf_raise_for_status(response)
        entries += response.json()
        url = (response.links.get("next") or {}).get("url")
    return entries


def _repo_folder(repo: str) -> Path:
    return hub_cache_dir() / ("models--" + repo.replace("/", "--"))


def cached_repo_files(repo: str) -> list[HubFile]:
    """Files of the repository's cached ``main`` snapshot (what offline mode can use)."""
    folder = _repo_folder(repo)
    ref = folder / "refs" / "main"
    if not ref.is_file():
        return []
    snapshot = folder / "snapshots" / ref.read_text().strip()
    out = []
    for path in sorted(snapshot.rglob("*")):
        if path.is_file():
            blob = path.resolve()
            digest = blob.name if re.fullmatch(r"[0-9a-f]{64}", blob.name) else None
            out.append(HubFile(path.relative_to(snapshot).as_posix(), path.stat().st_size, digest))
    return out


def download(repo: str, file: HubFile, token: str | None = None, cache_dir: str | None = None,
             local_dir: str | None = None) -> Path:
    """One file into the cache (or ``local_dir``), checked before its first use; returns its path."""
    from huggingface_hub import hf_hub_download

    try:
        path = Path(hf_hub_download(repo, file.path, token=_token(token), endpoint=_endpoint(),
                                    cache_dir=cache_dir or hub_cache_dir(), local_dir=local_dir,
                                    local_files_only=offline()))
    except Exception as e:  # noqa: BLE001 (every failure becomes one line)
        raise _explain(e, repo, file.path) from None
    _check_before_first_use(path, file, repo)
    return path


def _check_before_first_use(path: Path, file: HubFile, repo: str) -> None:
    blob = path.resolve()
    record = _check_record(blob, file)
    if record.exists():
        return
    if file.sha256 is not None:
        if file_sha256(blob) != file.sha256:
            _remove(path)
            raise HubError(f"{repo}/{file.path}: the download's sha256 is not the Hub's (removed from the cache; "
                           "run the command again)")
    if file.path.endswith(".gguf"):
        with open(blob, "rb") as f:
            if f.read(4) != b"GGUF":
                _remove(path)
                raise HubError(f"{repo}/{file.path} is not a GGUF file (removed from the cache)")
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps({"repo": repo, "path": file.path, "sha256": file.sha256, "file": str(blob)}))
    os.replace(tmp, record)


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_record(blob: Path, file: HubFile) -> Path:
    """Where lamina notes that this file, as it is now, passed its check (in lamina's own cache,
    keyed by the file's place, size and time, so a changed file is checked again)."""
    st = blob.stat()
    key = hashlib.sha256(f"{blob}:{st.st_size}:{st.st_mtime_ns}:{file.sha256}".encode()).hexdigest()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lamina" / "hub-checked" / key


def _remove(path: Path) -> None:
    blob = path.resolve()
    for p in {path, blob}:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


# -- what the commands call --------------------------------------------------------------------------

def resolve(spec: str, hf_file: str | None = None, token: str | None = None) -> Path:
    """``user/repo[:QUANT]`` (or a repo and ``--hf-file``) to a local model file, downloading as needed.

    For a split model every part is fetched; the first part's path is returned (it loads them all)."""
    repo, tag = split_repo_tag(spec)
    files = repo_files(repo, token)
    if not files:
        raise HubError(f"{repo} is not in the cache" + (" and HF_HUB_OFFLINE is set" if offline() else ""))
    if hf_file:
        chosen = next((f for f in files if f.path == hf_file), None)
        if chosen is None:
            raise HubError(f"{repo} has no file {hf_file!r}; its GGUF files: {_gguf_names(files)}")
    else:
        chosen = choose_model_file(files, tag)
        if chosen is None:
            wanted = f"one tagged {tag}" if tag else "any"
            raise HubError(f"{repo} has no GGUF model file ({wanted}); its GGUF files: {_gguf_names(files)}")
    paths = [download(repo, part, token) for part in parts_of(files, chosen)]
    return paths[0]


def _gguf_names(files: list[HubFile]) -> str:
    names = [f.path for f in files if f.path.endswith(".gguf")]
    return ", ".join(names) if names else "none"


def pretrained(repo_id: str, filename: str, *, local_dir: str | None = None, cache_dir: str | None = None,
               token: str | None = None, additional_files: list[str] | None = None) -> Path:
    """llama-cpp-python's ``Llama.from_pretrained`` file lookup: ``filename`` may be a glob pattern
    that must match exactly one file; the parts of a split model come along."""
    repo, _ = split_repo_tag(repo_id)
    files = repo_files(repo, token)
    matching = [f for f in files if fnmatch.fnmatch(f.path, filename)]
    if not matching:
        raise HubError(f"no file in {repo} matches {filename!r}; its GGUF files: {_gguf_names(files)}")
    firsts = [f for f in matching if _split_info(f.path)[1] == 1]
    if len(firsts) != 1:
        raise HubError(f"{len(firsts)} files in {repo} match {filename!r} ({', '.join(f.path for f in firsts)}): "
                       "give a pattern that matches one")
    wanted = parts_of(files, firsts[0])
    for extra in additional_files or []:
        found = [f for f in files if fnmatch.fnmatch(f.path, extra)]
        if not found:
            raise HubError(f"no file in {repo} matches {extra!r}")
        wanted += found
    paths = [download(repo, f, token, cache_dir=cache_dir, local_dir=local_dir) for f in wanted]
    return paths[0]


@dataclass(frozen=True)
class CachedModel:
    repo: str
    file: str
    size: int
    path: Path


def cached_models() -> list[CachedModel]:
    """Every GGUF file in the Hub cache, by repository (what ``lamina list`` shows)."""
    out = []
    root = hub_cache_dir()
    if not root.is_dir():
        return out
    for folder in sorted(root.glob("models--*")):
        repo = folder.name[len("models--"):].replace("--", "/", 1)
        for snapshot in sorted((folder / "snapshots").glob("*")):
            for path in sorted(snapshot.rglob("*.gguf")):
                if path.exists():
                    out.append(CachedModel(repo, path.relative_to(snapshot).as_posix(), path.stat().st_size, path))
    return out
