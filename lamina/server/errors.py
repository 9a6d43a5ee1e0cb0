"""Errors as llama-server reports them: ``{"error": {"code", "message", "type"}}`` with its type names.

Every refusal in the server is a :class:`ServerError` carrying the HTTP status and
llama-server's error type; the app turns it into the JSON body (or, mid-stream, an SSE
``error`` event). Extra fields (``n_prompt_tokens``, ``n_ctx``) travel in ``extra``.
"""

from __future__ import annotations

# llama-server's error types and their HTTP statuses (server-common.cpp: format_error_response)
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "server_error": 500,
    "not_supported_error": 501,
    "unavailable_error": 503,
    "exceed_context_size_error": 400,
}


class ServerError(Exception):
    """A request the server refuses or cannot complete, with llama-server's error type."""

    def __init__(self, message: str, type: str = "invalid_request_error", status: int | None = None,
                 headers: dict[str, str] | None = None, **extra):
        super().__init__(message)
        self.message = message
        self.type = type
        self.status = status if status is not None else ERROR_STATUS.get(type, 500)
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict:
        return {"error": {"code": self.status, "message": self.message, "type": self.type, **self.extra}}


def invalid_request(message: str) -> ServerError:
    return ServerError(message, "invalid_request_error")


def not_supported(message: str) -> ServerError:
    return ServerError(message, "not_supported_error")


def unavailable(message: str, retry_after: int | None = None) -> ServerError:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return ServerError(message, "unavailable_error", headers=headers)
