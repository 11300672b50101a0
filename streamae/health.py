"""HTTP endpoints for Kubernetes and Prometheus: ``/metrics``, ``/healthz``, ``/readyz``.

``/healthz`` answers 200 while the daemon loop keeps turning (a stuck loop fails it, so
Kubernetes restarts the pod); ``/readyz`` answers 200 once the broker answered a recent
poll and a model is loaded. Operator actions are POSTs (``POST /retrain``: retrain on
recent data now, what ``streamae retrain --accept-recent`` sends); an action answers 202
when accepted, 409 when this process cannot do it (a scorer does not retrain).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

Probe = Callable[[], tuple[bool, str]]
Action = Callable[[], tuple[bool, str]]  # (accepted, what happens)


class HealthServer:
    """A small threaded HTTP server; ``port=0`` picks a free port (see ``.port``)."""

    def __init__(self, registry: CollectorRegistry, live: Probe, ready: Probe,
                 host: str = "0.0.0.0", port: int = 9100,
                 actions: dict[str, Action] | None = None) -> None:
        posts = actions if actions is not None else {}  # may be filled in after start
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry)),
            "/healthz": lambda: probe_response(live),
            "/readyz": lambda: probe_response(ready),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?")[0])
                status, ctype, body = route() if route else (404, "text/plain", b"not found\n")
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                action = posts.get(self.path.split("?")[0])
                if action is None:
                    status, body = 404, b"not found\n"
                else:
                    accepted, what = action()
                    status, body = (202 if accepted else 409), f"{what}\n".encode()
                    log.info("event=operator_action path=%s accepted=%s", self.path, accepted)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # probes every few seconds would flood the log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="health",
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def __enter__(self) -> HealthServer:
        self._thread.start()
        log.info("event=health_server_started port=%d", self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def probe_response(probe: Probe) -> tuple[int, str, bytes]:
    ok, reason = probe()
    return (200 if ok else 503), "text/plain", f"{'ok' if ok else 'not ok'}: {reason}\n".encode()
