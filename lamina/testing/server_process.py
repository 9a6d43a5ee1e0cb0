"""A real ``lamina serve`` process for tests and benchmarks: started on a free port, waited for, stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LAMINA_SERVE = (sys.executable, "-m", "lamina.cli", "serve")


class ServerProcess:
    """``python -m lamina.cli serve ARGS --port P`` in a subprocess; ``url`` once :meth:`wait_ready` returns.

    ``command`` runs another server with llama-server's flags instead (benchmarks start
    ``llama-server`` itself this way).
    """

    def __init__(self, args: list[str], env: dict | None = None, port: int | None = None,
                 command: tuple[str, ...] = LAMINA_SERVE):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        fd, self.log_path = tempfile.mkstemp(prefix=f"lamina-serve-{self.port}-", suffix=".log")
        self._log = os.fdopen(fd, "wb")
        self.proc = subprocess.Popen([*command, *args, "--port", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_listening(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lamina serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"lamina serve did not listen within {timeout} s:\n{self.log()}")

    def wait_ready(self, timeout: float = 300.0, headers: dict | None = None) -> "ServerProcess":
        self.wait_listening(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = httpx.get(self.url + "/health", headers=headers, timeout=5)
            except httpx.TimeoutException:  # a probe that takes long (a Ray ingress's first one): not ready yet
                continue
            if r.status_code == 200:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"lamina serve exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.2)
        raise TimeoutError(f"lamina serve was not ready within {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
            os.unlink(self.log_path)  # what a failing test needed from it, it has read (see log())
        return self.proc.returncode
