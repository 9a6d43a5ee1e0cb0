"""Models from the Hugging Face Hub, against a local stand-in for the Hub (lamina.testing.fake_hub).

The stand-in speaks the Hub's HTTP API to the real ``huggingface_hub`` client; nothing leaves the
machine. The repositories hold the real smollm2 test model under Hub-style names, split and whole,
plus a gated repository, a file whose download breaks off, one the Hub lists with a wrong sha256,
and a ``.gguf`` file that is not GGUF.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lamina import hub
from lamina.gguf import read_one
from lamina.gguf.split import split
from lamina.testing.fake_hub import TOKEN, FakeHub
from lamina.testing.server_process import ServerProcess

REPO = "lamina-test/SmolLM2-135M-Instruct-GGUF"
SPLIT_REPO = "lamina-test/SmolLM2-split-GGUF"
NAME = "SmolLM2-135M-Instruct-Q4_1.gguf"


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory, model_paths):
    root = tmp_path_factory.mktemp("hub")
    model = model_paths["smollm2"]
    whole = root / REPO
    whole.mkdir(parents=True)
    os.symlink(model, whole / NAME)
    os.symlink(model, whole / "SmolLM2-135M-Instruct-Q8_0.gguf")  # (the same bytes under another tag)
    os.symlink(model, whole / "mmproj-SmolLM2-Q4_K_M.gguf")        # never a model to choose
    (whole / "README.md").write_text("# test\n")
    parts = root / SPLIT_REPO
    parts.mkdir(parents=True)
    with read_one(str(model)) as f:
        split(f, str(parts / "SmolLM2-135M-Instruct-Q4_1"), max_tensors=120)
    for repo, files in (("lamina-test/gated-GGUF", {"Gated-Q4_K_M.gguf": model}),
                        ("lamina-test/broken-GGUF", {"Broken-Q4_K_M.gguf": model}),
                        ("lamina-test/misreported-GGUF", {"Mis-Q4_K_M.gguf": model})):
        (root / repo).mkdir(parents=True)
        for name, target in files.items():
            os.symlink(target, root / repo / name)
    (root / "lamina-test/fake-GGUF").mkdir(parents=True)
    (root / "lamina-test/fake-GGUF/Fake-Q4_K_M.gguf").write_bytes(b"<html>not a model</html>" * 10)
    return root


@pytest.fixture(scope="module")
def fake_hub(hub_root):
    with FakeHub(hub_root, gated={"lamina-test/gated-GGUF"}, broken={"Broken-Q4_K_M.gguf"},
                 misreported={"Mis-Q4_K_M.gguf"}) as h:
        yield h


@pytest.fixture
def hub_env(fake_hub, tmp_path, monkeypatch):
    """A fresh, empty Hub cache, the stand-in as the endpoint, no token."""
    env = {"HF_ENDPOINT": fake_hub.url, "HF_HUB_CACHE": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path / "x"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HOME"):
        monkeypatch.delenv(k, raising=False)
    return {**os.environ, **env}


def snapshot_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("snapshots/*/*"))


# -- choosing the file ------------------------------------------------------------------------------

def test_quant_tags_choose_as_llama_cpp(hub_env):
    files = hub.repo_files(REPO)
    assert hub.choose_model_file(files, "q8_0").path == "SmolLM2-135M-Instruct-Q8_0.gguf"
    assert hub.choose_model_file(files, "Q4_1").path == NAME
    assert hub.choose_model_file(files, "").path == "SmolLM2-135M-Instruct-Q8_0.gguf"  # no Q4_K_M model: Q8_0
    assert hub.choose_model_file(files, "Q6_K") is None
    with pytest.raises(hub.HubError, match="no GGUF model file \\(one tagged Q6_K\\).*Q8_0.gguf"):
        hub.resolve(REPO + ":Q6_K")
    with pytest.raises(hub.HubError, match="not a Hugging Face repository"):
        hub.split_repo_tag("just-a-name")


def test_download_checks_and_caches(hub_env, fake_hub, model_paths):
    path = hub.resolve(REPO + ":Q4_1")
    assert path.name == NAME and path.read_bytes()[:4] == b"GGUF"
    assert path.resolve().name == hashlib.sha256(Path(model_paths["smollm2"]).read_bytes()).hexdigest()  # the blob
    before = len(fake_hub.requests)
    assert hub.resolve(REPO + ":Q4_1") == path            # the second time: from the cache
    assert not any("resolve" in r and "GET" in r for r in fake_hub.requests[before:])
    assert [m.file for m in hub.cached_models()] == [NAME]


def test_split_models_download_every_part(hub_env):
    first = hub.resolve(SPLIT_REPO + ":Q4_1")
    assert first.name.endswith("-00001-of-00003.gguf")
    assert len([p for p in first.parent.iterdir() if p.name.endswith(".gguf")]) == 3
    from lamina.gguf import read

    with read(str(first)) as f:
        assert len(f.parts) == 3


@pytest.mark.parametrize("spec, env, words", [
    ("lamina-test/no-such-GGUF", {}, "was not found on the Hub"),
    ("lamina-test/gated-GGUF", {}, "is gated"),
    ("lamina-test/broken-GGUF", {}, "lamina-test/broken-GGUF"),
    ("lamina-test/misreported-GGUF", {}, "sha256 is not the Hub's"),
    ("lamina-test/fake-GGUF", {}, "is not a GGUF file"),
    (REPO, {"HF_HUB_OFFLINE": "1"}, "not in the cache"),
    (REPO, {"HF_ENDPOINT": "http://127.0.0.1:9"}, "could not reach the Hub"),  # no server there: no network
])
def test_failures_are_one_clear_line_and_leave_nothing(hub_env, monkeypatch, tmp_path, spec, env, words):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(hub.HubError, match=words) as e:
        hub.resolve(spec)
    assert "\n" not in str(e.value)
    assert snapshot_files(tmp_path / "hf") == []  # no partial or unchecked file is left to be used


def test_gated_repository_with_a_token(hub_env, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert hub.resolve("lamina-test/gated-GGUF").name == "Gated-Q4_K_M.gguf"


def test_from_pretrained(hub_env, tmp_path):
    from lamina import Llama

    with pytest.raises(hub.HubError, match="2 files .* match"):
        Llama.from_pretrained(REPO, "*Instruct-Q*.gguf")
    llm = Llama.from_pretrained(REPO, "*Q4_1.gguf", local_dir=str(tmp_path / "here"), n_ctx=64, verbose=False)
    assert Path(llm.model_path).parent == tmp_path / "here"
    out = llm("Hello", max_tokens=3, temperature=0)["choices"][0]["text"]
    assert out
    llm.close()


# -- the commands ------------------------------------------------------------------------------------

def run(args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "lamina.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_cli_hf_downloads_then_runs_from_the_cache(hub_root, hub_env, model_paths, tmp_path):
    local = run(["-m", str(model_paths["smollm2"]), "-p", "Hello", "-n", "6", "--temp", "0"], hub_env)
    # (TQDM_POSITION=-1: tqdm draws its bar though stderr is a pipe here, not a terminal)
    first = run(["-hf", REPO + ":Q4_1", "-p", "Hello", "-n", "6", "--temp", "0"], {**hub_env, "TQDM_POSITION": "-1"})
    assert first.returncode == 0, first.stderr
    assert first.stdout == local.stdout
    assert NAME in first.stderr and "%" in first.stderr  # huggingface_hub's progress bar
    with FakeHub(hub_root) as gone:  # a Hub at another address: the cached file needs no network
        pass
    cached = run(["-hf", REPO + ":Q4_1", "-p", "Hello", "-n", "6", "--temp", "0"],
                 {**hub_env, "HF_ENDPOINT": gone.url})
    assert cached.returncode == 0 and cached.stdout == local.stdout, cached.stderr
    offline = run(["-hf", REPO + ":Q4_1", "-p", "Hello", "-n", "6", "--temp", "0"], {**hub_env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0 and offline.stdout == local.stdout, offline.stderr
    listed = run(["list"], hub_env)
    assert REPO + "/" + NAME in listed.stdout and "98.4 MB" in listed.stdout
    empty = run(["-hf", REPO, "-p", "x"], {**hub_env, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "none")})
    assert empty.returncode == 1 and empty.stderr.strip().startswith("error:") and "not in the cache" in empty.stderr
    both = run(["-m", "x.gguf", "-hf", REPO, "-p", "x"], hub_env)
    assert both.returncode == 1 and "not both" in both.stderr


def test_pull_and_serve(hub_env):
    pulled = run(["pull", SPLIT_REPO + ":Q4_1"], hub_env)
    assert pulled.returncode == 0 and pulled.stdout.strip().endswith("-00001-of-00003.gguf"), pulled.stderr
    srv = ServerProcess(["-hf", SPLIT_REPO + ":Q4_1", "-c", "256", "-np", "1"], env=hub_env)
    try:
        srv.wait_ready()
        r = httpx.post(srv.url + "/completion", json={"prompt": "Hello", "n_predict": 3, "temperature": 0},
                       timeout=300)  # a cold kernel cache compiles on the first request
        assert r.status_code == 200 and r.json()["tokens_predicted"] == 3
    finally:
        srv.stop()
    bad = run(["pull", "lamina-test/gated-GGUF"], hub_env)
    assert bad.returncode == 1 and "is gated" in bad.stderr
