"""A local stand-in for the Hugging Face Hub, for tests and demonstrations with no network.

It serves repositories from a folder (``ROOT/user/repo/...``) with the parts of the Hub's HTTP API
that ``huggingface_hub`` uses to list and download files: ``/api/models/{repo}/tree/{revision}``,
``/api/models/{repo}[/revision/{revision}]`` and ``/{repo}/resolve/{revision}/{path}`` (HEAD and GET,
with ``X-Repo-Commit``, sha256 ``ETag``s, sizes and byte ranges), and the Hub's errors
(``X-Error-Code: RepoNotFound``, ``EntryNotFound``, ``GatedRepo``). ``gated`` repositories need
``Authorization: Bearer TOKEN``; a file named in ``broken`` stops half-way, as a dropped connection,
and one named in ``misreported`` is listed with a sha256 that is not its content's.

    with FakeHub(root, gated={"org/private"}) as hub:
        os.environ["HF_ENDPOINT"] = hub.url
"""

# (no ``from __future__ import annotations``: FastAPI reads the route functions' annotations)
import hashlib
import socket
import threading
import time
from pathlib import Path

from lamina.hub import file_sha256

TOKEN = "hf_lamina_test_token"


class FakeHub:
    def __init__(self, root: str | Path, gated: set[str] = frozenset(), broken: set[str] = frozenset(),
                 misreported: set[str] = frozenset()):
        self.root = Path(root)
        self.gated, self.broken, self.misreported = set(gated), set(broken), set(misreported)
        self.requests: list[str] = []
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = None
        self._thread = None

    # -- the repositories ---------------------------------------------------------------------------
    def commit(self, repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def files(self, repo: str) -> list[Path]:
        base = self.root / repo
        return sorted(p for p in base.rglob("*") if p.is_file())

    def entry(self, repo: str, path: Path) -> dict:
        digest = file_sha256(path)
        size = path.stat().st_size
        name = path.relative_to(self.root / repo).as_posix()
        if name in self.misreported:
            digest = hashlib.sha256(digest.encode()).hexdigest()
        return {"type": "file", "oid": hashlib.sha1(digest.encode()).hexdigest(), "size": size, "path": name,
                "lfs": {"oid": digest, "size": size, "pointerSize": 134}}

    # -- the app --------------------------------------------------------------------------------------
    def app(self):
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, Response

        app = FastAPI()
        hub = self

        def error(status: int, code: str, message: str) -> Response:
            return JSONResponse({"error": message}, status_code=status,
                                headers={"X-Error-Code": code, "X-Error-Message": message})

        def check(request: Request, repo: str) -> Response | None:
            hub.requests.append(f"{request.method} {request.url.path}")
            if not (hub.root / repo).is_dir():
                return error(404, "RepoNotFound", f"Repository {repo} not found")
            if repo in hub.gated and request.headers.get("authorization") != f"Bearer {TOKEN}":
                return error(401, "GatedRepo", f"Access to model {repo} is restricted")
            return None

        @app.get("/api/models/{user}/{name}/tree/{revision}")
        async def tree(user: str, name: str, revision: str, request: Request):
            repo = f"{user}/{name}"
            refused = check(request, repo)
            if refused is not None:
                return refused
            return [hub.entry(repo, p) for p in hub.files(repo)]

        @app.get("/api/models/{user}/{name}")
        @app.get("/api/models/{user}/{name}/revision/{revision}")
        async def info(user: str, name: str, request: Request, revision: str = "main"):
            repo = f"{user}/{name}"
            refused = check(request, repo)
            if refused is not None:
                return refused
            return {"id": repo, "sha": hub.commit(repo),
                    "siblings": [{"rfilename": p.relative_to(hub.root / repo).as_posix()} for p in hub.files(repo)]}

        @app.api_route("/{user}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
        async def resolve(user: str, name: str, revision: str, path: str, request: Request):
            repo = f"{user}/{name}"
            refused = check(request, repo)
            if refused is not None:
                return refused
            file = hub.root / repo / path
            if not file.is_file():
                return error(404, "EntryNotFound", f"{path} does not exist in {repo}")
            digest, size = file_sha256(file), file.stat().st_size
            headers = {"X-Repo-Commit": hub.commit(repo), "ETag": f'"{digest}"', "X-Linked-Etag": f'"{digest}"',
                       "X-Linked-Size": str(size), "Accept-Ranges": "bytes", "Content-Length": str(size)}
            if request.method == "HEAD":
                return Response(status_code=200, headers=headers)
            data = file.read_bytes()
            start = 0
            rng = request.headers.get("range", "")
            if rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0] or 0)
            body = data[start:]
            if path in hub.broken:
                body = body[: len(body) // 2]  # the connection "drops": fewer bytes than Content-Length
            headers["Content-Length"] = str(len(data) - start)
            status = 206 if start else 200
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return Response(body, status_code=status, headers=headers, media_type="application/octet-stream")

        return app

    # -- running ---------------------------------------------------------------------------------------
    def __enter__(self):
        import uvicorn

        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("the fake hub did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(10)


def main() -> None:
    """``python -m lamina.testing.fake_hub --root DIR [--port P]``: serve DIR's repositories until Ctrl-C."""
    import argparse

    p = argparse.ArgumentParser(description="serve ROOT/user/repo/... as a local Hugging Face Hub")
    p.add_argument("--root", required=True)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    hub = FakeHub(args.root)
    if args.port:
        hub.port, hub.url = args.port, f"http://127.0.0.1:{args.port}"
    with hub:
        print(f"serving {args.root} as a Hub at {hub.url} (HF_ENDPOINT={hub.url}); Ctrl-C stops", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
