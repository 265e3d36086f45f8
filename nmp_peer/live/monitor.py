"""The live web monitor: a page in the browser showing every stream of a running session.

``nmp-peer jam --monitor 127.0.0.1:8080`` serves, on the peer's own event loop (aiohttp):

- ``GET /``: the page (``monitor.html``, plain HTML/JS shipped with the package): one panel
  per peer with its buffer depth and target, lost / late / concealed / concealer_partial,
  jitter, latency, round-trip time, a level meter and a scrolling plot;
- ``GET /ws``: a WebSocket that sends every snapshot as it is published (JSON text);
- ``GET /snapshot.json``: the latest snapshot.

The engine publishes snapshots (``nmp_peer.receiver.snapshot``) by replacing a reference on
a :class:`SnapshotBoard`, from the event loop, ``SNAPSHOT_HZ`` times a second; the monitor
only reads the latest one. It takes no lock: nothing here can hold up the audio callback.

Guard: on a loopback address anyone on this host may look (the ``Host`` header must name a
loopback address, against DNS rebinding; a WebSocket's ``Origin`` must be the page's own).
Bound anywhere else it needs a key file: a token every request carries as ``?key=TOKEN``
(the page takes it from its URL once, then drops it from the address bar) or as
``Authorization: Bearer TOKEN``, checked with ``hmac.compare_digest``; others get 403.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from nmp_peer.errors import UserError
from nmp_peer.live.transport import Endpoint, EndpointError
from nmp_peer.proto.security import KeyFileError

if TYPE_CHECKING:  # aiohttp is imported when a monitor starts: a jam without one does not wait for it
    from aiohttp import web

SNAPSHOT_HZ = 20.0
"""Snapshots the peer publishes per second (the page redraws on each)."""
MIN_TOKEN_CHARS = 16
MAX_CLIENTS = 16
"""WebSockets served at once; more are refused (503), so that watchers cannot load the audio loop."""
LOOPBACK_NAMES = ("localhost",)
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
    ),
}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class MonitorConfig:
    host: str
    port: int
    token: str | None = None
    """Every request must carry it (None: loopback only, no token)."""

    @classmethod
    def parse(cls, address: str, key_file: Path | None = None) -> MonitorConfig:
        """``--monitor HOST:PORT`` and ``--monitor-key-file``: a non-loopback address without a key is refused."""
        try:
            endpoint = Endpoint.parse(address)
        except EndpointError as exc:
            raise UserError(f"--monitor {exc}") from None
        token = load_token(key_file) if key_file is not None else None
        if token is None and not is_loopback(endpoint.host):
            raise UserError(
                f"--monitor {address} is not a loopback address: guard it with --monitor-key-file FILE "
                "(a token of 16+ characters, e.g. openssl rand -hex 16 > monitor.key), or use 127.0.0.1:PORT"
            )
        return cls(endpoint.host, endpoint.port, token)


def load_token(path: Path) -> str:
    """A monitor key file holds one token: at least 16 URL-safe characters (letters, digits, ``-._~``)."""
    try:
        text = path.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise KeyFileError(f"cannot read monitor key file {path}: {reason}") from None
    if len(text) < MIN_TOKEN_CHARS or not all(c.isascii() and (c.isalnum() or c in "-._~") for c in text):
        raise KeyFileError(
            f"monitor key file {path} must hold one token of {MIN_TOKEN_CHARS}+ letters, digits or -._~ "
            f"(try: openssl rand -hex 16 > {path.name})"
        )
    return text


class SnapshotBoard:
    """The latest snapshot, replaced whole by ``publish`` (from the event loop) and read by watchers."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] | None = None
        self.seq = 0
        self._new = asyncio.Event()

    def publish(self, snapshot: dict[str, Any]) -> None:
        snapshot["seq"] = self.seq + 1
        self.latest = snapshot
        self.seq += 1
        new, self._new = self._new, asyncio.Event()
        new.set()

    async def newer(self, seq: int) -> dict[str, Any]:
        """The latest snapshot once it is newer than ``seq`` (at once if it is already)."""
        while self.seq <= seq or self.latest is None:
            await self._new.wait()
        return self.latest


async def publish_every(board: SnapshotBoard, build: Callable[[], dict[str, Any]], hz: float = SNAPSHOT_HZ) -> None:
    """Publish ``build()`` on ``board`` ``hz`` times a second, on a fixed grid of the loop's clock
    (ticks missed in a stall are skipped, not caught up), until cancelled."""
    loop = asyncio.get_running_loop()
    start, period, k = loop.time(), 1.0 / hz, 0
    while True:
        board.publish(build())
        k = max(k + 1, math.ceil((loop.time() - start) / period))
        await asyncio.sleep(max(0.0, start + k * period - loop.time()))


class Monitor:
    """The monitor's HTTP server, on the running event loop: ``await start()``, ``await close()``."""

    def __init__(self, config: MonitorConfig, board: SnapshotBoard) -> None:
        self.config = config
        self.board = board
        self._sockets: set[web.WebSocketResponse] = set()
        self.port = config.port
        self._runner: web.AppRunner | None = None
        self._page = resources.files("nmp_peer.live").joinpath("monitor.html").read_bytes()
        self._text: tuple[int, str] = (0, "null")

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}/"

    @property
    def announcement(self) -> str:
        """What the jam says once it serves: where, and how to open it when keyed."""
        if self.config.token is None:
            return f"monitor at {self.url}"
        return f"monitor at {self.url} (open it as {self.url}?key=TOKEN, the token of the monitor key file)"

    async def start(self) -> None:
        from aiohttp import web

        @web.middleware
        async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
            return await self._guard(request, handler)

        app = web.Application(middlewares=[guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/snapshot.json", self._snapshot)
        app.router.add_get("/ws", self._websocket)
        app.on_shutdown.append(self._close_sockets)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise EndpointError(
                f"cannot serve the monitor on {self.config.host}:{self.config.port}: {exc.strerror or exc}"
            ) from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    @property
    def clients(self) -> int:
        """Pages watching now (open WebSockets)."""
        return len(self._sockets)

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"the jam ended")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ requests
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        from aiohttp import web

        refusal = self._refusal(request)
        if refusal is not None:
            return web.Response(status=403, text=f"forbidden: {refusal}\n", headers=SECURITY_HEADERS)
        response: web.StreamResponse = await handler(request)
        if not response.prepared:
            response.headers.update(SECURITY_HEADERS)
        return response

    def _refusal(self, request: web.Request) -> str | None:
        token = self.config.token
        if token is not None:
            given = request.query.get("key", "")
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                given = auth[len("Bearer ") :]
            if not hmac.compare_digest(given.encode("utf-8", "replace"), token.encode()):
                return "a wrong or missing key (open the page as /?key=TOKEN, the token of the monitor key file)"
        elif not is_loopback(_host_name(request.host)):
            return "this monitor serves loopback addresses only"
        origin = request.headers.get("Origin")
        if request.path == "/ws" and origin is not None and urlsplit(origin).netloc != request.host:
            return "a WebSocket from another site"
        return None

    async def _index(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.Response(body=self._page, content_type="text/html", charset="utf-8")

    def _json(self, snapshot: dict[str, Any] | None) -> str:
        """The snapshot as JSON text, made once per snapshot however many watch it."""
        seq = 0 if snapshot is None else int(snapshot["seq"])
        if self._text[0] != seq:
            self._text = (seq, json.dumps(snapshot, separators=(",", ":"), allow_nan=False))
        return self._text[1]

    async def _snapshot(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.Response(text=self._json(self.board.latest), content_type="application/json")

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import WSMsgType, web

        if self.clients >= MAX_CLIENTS:
            return web.Response(status=503, text=f"the monitor serves {MAX_CLIENTS} pages at once\n")
        # No per-message deflate (CPU on the jam's loop for a few kB); a page that does not answer
        # the close at the jam's end is given 1 s, not aiohttp's 10.
        ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=4096, compress=False, timeout=1.0)
        await ws.prepare(request)
        self._sockets.add(ws)
        sender = asyncio.get_running_loop().create_task(self._send_snapshots(ws))
        try:
            async for msg in ws:  # nothing is expected from the page; this reads its close
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._sockets.discard(ws)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        return ws

    async def _send_snapshots(self, ws: web.WebSocketResponse) -> None:
        """Each new snapshot; a slow page skips to the latest instead of queueing them."""
        seq = 0
        while not ws.closed:
            snapshot = await self.board.newer(seq)
            seq = int(snapshot["seq"])
            try:
                await ws.send_str(self._json(snapshot))
            except (ConnectionError, RuntimeError):
                return


def _host_name(host: str) -> str:
    """The host of a ``Host`` header (``127.0.0.1:8080``, ``[::1]:8080``, ``localhost``)."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host
