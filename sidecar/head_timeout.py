"""A deadline for each request's head (request line and headers), so slow-header clients are cut.

aiohttp waits for a request's headers as long as its keep-alive timeout allows (about an hour by
default), so a client that opens connections and trickles header bytes (slowloris) could hold each
one that long and exhaust the process's file descriptors. `HeadTimeoutServer` is aiohttp's
`web.Server` whose connections are closed when a request's head has not completely arrived
`head_timeout_seconds` after the connection opened or, between requests, after the next request's
first byte. Trickling bytes does not move the deadline. Idle keep-alive connections (no bytes),
request bodies and websockets are not affected. `sidecar.reload` serves the listening socket with
it, using `server.header_read_timeout_seconds`.

It relies on two attributes of aiohttp's `RequestHandler` (`_request_count`, counting parsed
request heads, and `_waiter`, pending while the connection waits for the next head);
tests/security/test_slow_clients.py proves the behaviour against the real server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["HeadTimeoutServer"]


class _HeadTimeoutHandler(RequestHandler):
    """One connection: aiohttp's handler plus the head deadline."""

    __slots__ = ("_head_deadline", "_head_timeout")

    def __init__(self, manager: web.Server, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_deadline: asyncio.TimerHandle | None = None

    def _awaiting_head(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm(self) -> None:
        self._head_deadline = self._loop.call_later(
            self._head_timeout, self._expire, self._request_count
        )

    def _expire(self, heads_at_arm: int) -> None:
        self._head_deadline = None
        if self._request_count == heads_at_arm and self._awaiting_head():
            self.force_close()  # no head within the deadline, and nothing in progress

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._head_deadline is None and self._awaiting_head():
            self._arm()  # the first byte of the next request's head
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        super().connection_lost(exc)


class HeadTimeoutServer(web.Server):
    """`web.Server` whose connections must deliver each request head within the deadline."""

    def __init__(self, handler: Any, *, head_timeout_seconds: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.head_timeout_seconds = head_timeout_seconds

    def __call__(self) -> RequestHandler:
        return _HeadTimeoutHandler(
            self, loop=self._loop, head_timeout=self.head_timeout_seconds, **self._kwargs
        )
