"""API keys: who may call which route.

Keys are compared in constant time (``hmac.compare_digest``), and accepted as
``Authorization: Bearer KEY`` or ``X-Api-Key: KEY``, as llama-server accepts them.
``/health``, the model list and the chat page's files stay public (the page asks for the key). With ``--admin-key`` the admin routes
(``/slots``, slot actions, ``/metrics``, ``POST /props``) need an admin key and the
inference keys no longer open them (llama.cpp #5837); without one, every API key is
also an admin key, as in llama-server.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from .errors import ServerError

PUBLIC_PATHS = frozenset({"/health", "/v1/health", "/models", "/v1/models", "/api/tags", "/"})
PUBLIC_PREFIXES = ("/webui/",)  # the chat page's files: it must load before its user can type a key
ADMIN_PREFIXES = ("/slots", "/metrics")


def is_admin_route(method: str, path: str) -> bool:
    return path.startswith(ADMIN_PREFIXES) or (path == "/props" and method == "POST")


def read_key_file(path: str) -> list[str]:
    """``--api-key-file``: one key per line; blank lines and lines starting with # are skipped."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]


def presented_key(headers) -> str | None:
    """The key a request carries, from ``Authorization: Bearer`` or ``X-Api-Key``."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("x-api-key")
    return key.strip() if key else None


def _matches(key: str, keys: tuple[str, ...]) -> bool:
    given = key.encode("utf-8", "surrogatepass")
    found = False
    for k in keys:  # every key is compared, so the time does not tell which one (or whether any) matched
        found |= hmac.compare_digest(given, k.encode("utf-8"))
    return found


@dataclass(frozen=True)
class KeyPolicy:
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()

    def check(self, method: str, path: str, headers) -> None:
        """Raise 401 unless the request may use ``path``."""
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or method == "OPTIONS":
            return
        admin = is_admin_route(method, path)
        needed = self.admin_keys if admin and self.admin_keys else self.api_keys + self.admin_keys
        if not needed:
            return
        key = presented_key(headers)
        if key is None or not _matches(key, needed):
            what = "an admin key (--admin-key)" if admin and self.admin_keys else "an API key"
            raise ServerError(f"Invalid API Key: this route needs {what}, sent as 'Authorization: Bearer KEY' "
                              "or 'X-Api-Key: KEY'", "authentication_error")

    def is_admin(self, headers) -> bool:
        """Whether the request carries an admin key (without --admin-key: whether keys are off or it has one)."""
        keys = self.admin_keys or self.api_keys
        if not keys:
            return True
        key = presented_key(headers)
        return key is not None and _matches(key, keys)
