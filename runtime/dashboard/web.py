"""The dashboard's HTTP plumbing: status codes for errors, server timing, server-sent events, and
redirects that stay on this site."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response, StreamingResponse

from ..errors import InvalidArgument, RemoteError
from ..protocol import ErrorCode


def status_of(exc: Exception) -> int:
    """A page's status for an error: what was asked does not read (400), or the cluster cannot
    answer (503)."""
    if isinstance(exc, ValueError | InvalidArgument):
        return 400
    if isinstance(exc, RemoteError) and exc.code in (ErrorCode.BAD_FIELD, ErrorCode.BAD_FRAME):
        return 400
    return 503


class ServerTiming:
    """Every response says how long the dashboard took to make it (`Server-Timing: app;dur=MS`,
    which browsers' developer tools show and bench/dashboard.py reads), the cluster's answers
    included; a stream, until its headers."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed(message: Any) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - started) * 1000
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"server-timing", f"app;dur={took:.1f}".encode())]}
            await send(message)
        await self.app(scope, receive, timed)


def local_path(target: str | None) -> str:
    """A redirect target on this site only (never another host)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def event(name: str, data: str) -> str:
    lines = "\n".join(f"data: {line}" for line in (data.splitlines() or [""]))
    return f"event: {name}\n{lines}\n\n"


def sse(stream: AsyncIterator[str]) -> Response:
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
