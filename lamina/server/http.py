"""uvicorn, with two things llama-server users rely on: slow clients dropped, and a clean stop.

* :class:`TimedH11Protocol` closes a connection whose request headers have not fully
  arrived ``header_timeout`` seconds after it opened (or after its previous answer), so
  a client trickling headers byte by byte cannot hold a connection open for ever.
* :class:`Server` stops the engine as soon as SIGTERM or Ctrl-C arrives: every stream in
  flight ends with an error event, the listening socket closes at once, and the process
  exits after a short grace period for those streams to flush.
"""

from __future__ import annotations

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


class TimedH11Protocol(H11Protocol):
    header_timeout = 10.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_overdue)

    def _headers_overdue(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("dropping a connection whose request headers did not arrive within %.0f s",
                             self.header_timeout)
            self.transport.close()

    def connection_lost(self, exc) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)


def protocol_with_header_timeout(seconds: float) -> type[H11Protocol]:
    return type("TimedH11Protocol", (TimedH11Protocol,), {"header_timeout": seconds})


class Server(uvicorn.Server):
    """uvicorn's server, telling the engine to stop on the first signal."""

    def __init__(self, config: uvicorn.Config, on_exit):
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig, frame) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)
