"""The dashboard's web server (aiohttp): the page, its scripts, and a Server-Sent Events stream.

``GET /`` is the page; ``GET /stream`` an SSE stream (a ``snapshot`` first, then a ``tick``
every second); ``GET /api/snapshot`` the same snapshot as JSON; ``GET /livez`` 200 while the
server runs. Each browser has a bounded queue of updates: a browser that stops reading loses
its oldest updates, it never holds up the others or the intake.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from importlib import resources
from typing import Protocol

from aiohttp import web

from common.logs import get_logger
from dashboard.sources import Sink
from dashboard.state import DashboardState, Update, encode_update

#: Updates a browser may fall behind by before its oldest are dropped.
CLIENT_BACKLOG = 30
TICK_S = 1.0
_STATIC = ("index.html", "app.js", "style.css")
_TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css"}

_log = get_logger(__name__)


class Source(Protocol):
    connected: bool

    async def run(self, sink: Sink) -> None: ...


class DashboardServer:
    """Serves the dashboard for ``source`` on ``host:port`` (port 0: any free port)."""

    def __init__(
        self, source: Source, *, host: str = "127.0.0.1", port: int = 8080, tick_s: float = TICK_S
    ) -> None:
        self.source = source
        self.host = host
        self.port = port
        self.tick_s = tick_s
        self.state = DashboardState()
        self._clients: set[asyncio.Queue[Update | None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._pages = {name: _read(name) for name in _STATIC}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/api/snapshot", self._snapshot)
        app.router.add_get("/livez", self._live)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        self._tasks = [
            asyncio.create_task(self._intake(), name="dashboard-intake"),
            asyncio.create_task(self._ticker(), name="dashboard-ticker"),
        ]
        _log.info("dashboard serving", url=self.url)

    async def stop(self) -> None:
        for queue in self._clients:
            _offer(queue, None)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DashboardServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _intake(self) -> None:
        try:
            await self.source.run(self.state.ingest)
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("dashboard source failed")

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            update = self.state.tick(time.time())
            update["source_connected"] = self.source.connected
            for queue in list(self._clients):
                _offer(queue, update)

    async def _page(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._pages["index.html"], content_type="text/html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._pages:
            raise web.HTTPNotFound()
        return web.Response(body=self._pages[name], content_type=_TYPES[name.rsplit(".", 1)[1]])

    async def _snapshot(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=encode_update(self.state.snapshot()), content_type="application/json"
        )

    async def _live(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "source_connected": self.source.connected})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[Update | None] = asyncio.Queue(CLIENT_BACKLOG)
        self._clients.add(queue)
        try:
            await response.write(_sse(self.state.snapshot()))
            while (update := await queue.get()) is not None:
                await response.write(_sse(update))
        except ConnectionResetError:
            pass  # the browser went away
        finally:
            self._clients.discard(queue)
        return response


def _offer(queue: asyncio.Queue[Update | None], update: Update | None) -> None:
    """Queue ``update`` for one browser, dropping its oldest when it is behind."""
    while True:
        try:
            queue.put_nowait(update)
            return
        except asyncio.QueueFull:
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()


def _sse(update: Update) -> bytes:
    return b"data: " + encode_update(update) + b"\n\n"


def _read(name: str) -> bytes:
    return resources.files("dashboard").joinpath("static", name).read_bytes()
