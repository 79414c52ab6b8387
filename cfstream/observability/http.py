"""/metrics, /healthz and /readyz on one small threaded HTTP server per service.

/healthz answers while the process can serve at all (Kubernetes liveness); /readyz answers 200
only while ``ready()`` is true, e.g. partitions assigned and caught up (readiness).
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from cfstream.errors import ConfigurationError

logger = logging.getLogger(__name__)

# In a container the probes and Prometheus reach the pod's address, not its loopback.
DEFAULT_HOST = "0.0.0.0"  # noqa: S104
# A stuck scrape must not pin a handler thread forever.
REQUEST_TIMEOUT = 10.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    registry: CollectorRegistry
    ready: Callable[[], bool]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT
    server_version = "cfstream"
    sys_version = ""

    def do_GET(self) -> None:
        self._respond(with_body=True)

    def do_HEAD(self) -> None:
        self._respond(with_body=False)

    def _respond(self, with_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(self.server.registry), content_type, with_body)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8", with_body)
        elif path == "/readyz":
            if self._is_ready():
                self._send(200, b"ready\n", "text/plain; charset=utf-8", with_body)
            else:
                self._send(503, b"not ready\n", "text/plain; charset=utf-8", with_body)
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n",
                       "text/plain; charset=utf-8", with_body)

    def _is_ready(self) -> bool:
        try:
            return bool(self.server.ready())
        except Exception:
            logger.exception("readiness check raised; answering not ready")
            return False

    def _send(self, status: int, body: bytes, content_type: str, with_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Probes hit these endpoints every few seconds: keep them out of the INFO log.
        logger.debug("%s - %s", self.address_string(), format % args)


class ObservabilityServer:
    """A running server; ``port`` is the bound port (useful after binding port 0)."""

    def __init__(self, httpd: _Server) -> None:
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"cfstream-http-{self.port}", daemon=True,
        )
        self._thread.start()

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host == DEFAULT_HOST else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> ObservabilityServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def start_server(
    port: int, registry: CollectorRegistry, ready: Callable[[], bool], host: str = DEFAULT_HOST,
) -> ObservabilityServer:
    """Bind ``host:port`` and serve in a daemon thread; port 0 binds a free port (see ``.port``).

    ConfigurationError, in one line naming the setting, if the port is taken.
    """
    try:
        httpd = _Server((host, port), _Handler)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise ConfigurationError(
            f"port {port} is already in use (another cfstream service on this host?): set "
            "CFSTREAM_HTTP_PORT to a free port, or to 0 to turn /metrics, /healthz and /readyz "
            "off") from None
    httpd.registry = registry
    httpd.ready = ready
    server = ObservabilityServer(httpd)
    logger.info("serving /metrics, /healthz and /readyz on %s:%d", host, server.port)
    return server


def serve(
    port: int, registry: CollectorRegistry, ready: Callable[[], bool], host: str = DEFAULT_HOST,
) -> ObservabilityServer | None:
    """Start the server on CFSTREAM_HTTP_PORT's value; 0 means turned off and returns None."""
    if port == 0:
        logger.info("HTTP endpoint disabled (CFSTREAM_HTTP_PORT=0)")
        return None
    return start_server(port, registry, ready, host)
