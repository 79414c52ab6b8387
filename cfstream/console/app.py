"""The console's web app (aiohttp): one page and its modules, a JSON snapshot, a server-sent
event stream of snapshots (of the section the page shows), and a cancel endpoint.

The page renders everything with ``textContent``, never as HTML: task arguments are user data.
The cancel POST must come from the page itself: it carries a token that only the page knows,
and a browser's ``Origin`` header, when sent, must be the console's own.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import secrets
import socket
from importlib import resources
from typing import Any

from aiohttp import web

from cfstream.clock import now_ms
from cfstream.console.feed import Feed
from cfstream.console.state import Model
from cfstream.console.view import View
from cfstream.errors import ConfigurationError
from cfstream.processor.pending import cancel, pending_calls
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

# Loopback: the console can cancel calls, so it is not on the network unless asked.
DEFAULT_HOST = "127.0.0.1"
# How often the page gets a new snapshot.
PUSH_INTERVAL_S = 1.0
CANCEL_REASON = "cancelled from the console"
_TYPES = {".js": "text/javascript", ".css": "text/css"}
_NO_STORE = {"Cache-Control": "no-store"}
STATIC = resources.files("cfstream.console") / "static"

SETTINGS = web.AppKey("settings", Settings)
MODEL = web.AppKey("model", Model)
TOKEN = web.AppKey("token", str)
CLOSING = web.AppKey("closing", asyncio.Event)


def make_app(settings: Settings) -> web.Application:
    """The app; Kafka readers fill its model while it runs."""
    app = web.Application()
    app[SETTINGS] = settings
    app[MODEL] = Model()
    app[TOKEN] = secrets.token_hex(16)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/api/stream", stream)
    app.router.add_post("/api/cancel", cancel_call)

    async def readers(app: web.Application) -> Any:
        app[CLOSING] = asyncio.Event()
        feed = Feed(settings, app[MODEL])
        feed.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, feed.stop)

    async def closing(app: web.Application) -> None:
        app[CLOSING].set()  # ends the event streams, so shutdown does not wait on them

    app.cleanup_ctx.append(readers)
    app.on_shutdown.append(closing)
    return app


async def index(request: web.Request) -> web.Response:
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    page = page.replace("{{token}}", request.app[TOKEN])  # hex digits: nothing to escape
    return web.Response(text=page, content_type="text/html", headers=_NO_STORE)


async def static(request: web.Request) -> web.Response:
    """The page's scripts (ES modules) and style: files of the static folder, by name."""
    name = request.match_info["name"]
    kind = _TYPES.get(name[name.rfind("."):]) if "." in name else None
    if kind is None or "/" in name or name.startswith(".") or not (STATIC / name).is_file():
        raise web.HTTPNotFound()
    return web.Response(text=(STATIC / name).read_text(encoding="utf-8"), content_type=kind,
                        headers=_NO_STORE)


def _view(request: web.Request) -> dict[str, Any]:
    return request.app[MODEL].snapshot(now_ms(), View.from_query(request.query))


async def snapshot(request: web.Request) -> web.Response:
    return web.json_response(_view(request), headers=_NO_STORE)


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: a snapshot now and every PUSH_INTERVAL_S, until the page goes."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
    await response.prepare(request)
    closing = request.app[CLOSING]
    try:
        while not closing.is_set():
            await response.write(f"data: {json.dumps(_view(request))}\n\n".encode())
            try:
                await asyncio.wait_for(closing.wait(), PUSH_INTERVAL_S)
            except TimeoutError:
                pass
    except ConnectionResetError:
        pass  # the page went away
    return response


async def cancel_call(request: web.Request) -> web.Response:
    if request.headers.get("X-CSRF-Token") != request.app[TOKEN]:
        raise web.HTTPForbidden(text="missing or wrong token: cancel from the console's page")
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise web.HTTPForbidden(text=f"cross-origin request from {origin} refused")
    try:
        execution_id = str((await request.json())["id"])
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text='send {"id": EXECUTION_ID}') from None
    settings = request.app[SETTINGS]

    def run() -> bool:
        found = pending_calls(settings, execution_id=execution_id)
        if not found:
            return False
        cancel(settings, found[0], CANCEL_REASON)
        return True

    if not await asyncio.get_running_loop().run_in_executor(None, run):
        return web.json_response({"error": f"{execution_id} is not pending: it ran, was "
                                           "replaced or was cancelled"}, status=404)
    return web.json_response({"cancelled": execution_id})


def bind(host: str, port: int) -> socket.socket:
    """The listening socket; ConfigurationError, in one line naming the setting, if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        raise ConfigurationError(
            f"port {port} is already in use (another console?): set CFSTREAM_CONSOLE_PORT "
            "or pass --port with a free port") from None
    sock.listen(128)
    return sock


def run(settings: Settings, host: str = DEFAULT_HOST, port: int | None = None) -> None:
    """Serve until SIGINT or SIGTERM; port 0 takes a free one (logged)."""
    sock = bind(host, settings.console_port if port is None else port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    logger.info("console on http://%s:%d", shown, bound)
    web.run_app(make_app(settings), sock=sock, print=None, shutdown_timeout=5,
                access_log=None)
