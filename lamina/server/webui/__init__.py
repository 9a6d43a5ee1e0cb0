"""The chat page ``lamina serve`` shows at ``/``: static HTML, CSS and JavaScript, no build step.

The page loads nothing from elsewhere and runs no inline script: every answer is sent with a
Content-Security-Policy that allows scripts, styles and connections from this server only, so
even a message that somehow became markup could not load or run anything.
"""

from __future__ import annotations

from importlib import resources

from starlette.responses import Response

#: file name -> media type; nothing else under /webui/ is served
FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "markdown.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                           "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def read(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


def page_file(name: str) -> Response | None:
    """One of the page's files with its security headers, or None for any other name."""
    if name not in FILES:
        return None
    return Response(read(name), media_type=FILES[name], headers=HEADERS)


def total_size() -> int:
    """Bytes of everything the page needs (it needs nothing else)."""
    return sum(len(read(name)) for name in FILES)
