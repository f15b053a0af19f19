"""Shared fixtures: an isolated data environment, a loopback HTTP server, the data mirror."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

DATA_ENV_VARS = ("SCRATCHFORMER_DATA", "SCRATCHFORMER_CACHE", "SCRATCHFORMER_OFFLINE")
PROXY_ENV_VARS = ("http_proxy", "https_proxy", "all_proxy")
PROXY_ENV_VARS += tuple(v.upper() for v in PROXY_ENV_VARS)
# Read at import, before any fixture clears it, so fixture order cannot change the answer.
_MIRROR_ENV = os.environ.get("SCRATCHFORMER_DATA", "")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, one torch thread per worker: two workers on two cores, no contention."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture
def data_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No mirror, downloads allowed, and an empty cache under ``tmp_path``; returns the cache."""
    for var in DATA_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("SCRATCHFORMER_CACHE", str(cache))
    return cache


class LoopbackServer:
    """An HTTP server on 127.0.0.1 serving in-memory files; it records every path requested."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits.append(self.path)
                if self.path not in server.routes:
                    self.send_error(404, "Not Found")
                    return
                body, length = server.routes[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if length == "exact":
                    self.send_header("Content-Length", str(len(body)))
                elif length == "too-long":  # promise more bytes than are sent, then hang up
                    self.send_header("Content-Length", str(len(body) + 100))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def serve(self, path: str, body: bytes, length: str = "exact") -> str:
        """Serve ``body`` at ``path`` and return its URL; ``length``: exact, none or too-long."""
        self.routes[path] = (body, length)
        return self.url(path)

    def url(self, path: str) -> str:
        """The full URL of ``path`` on this server."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"


@pytest.fixture
def http_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    """A running :class:`LoopbackServer`; proxy variables are cleared so urllib goes direct."""
    for var in PROXY_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    server = LoopbackServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(timeout=5)


@pytest.fixture
def shared_data() -> Path:
    """The read-only data mirror: ``$SCRATCHFORMER_DATA``, else ``../shared/data``; else skip."""
    if _MIRROR_ENV:  # set on purpose: a wrong value should fail the tests, not skip them
        return Path(_MIRROR_ENV)
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip("no data mirror: SCRATCHFORMER_DATA is unset and ../shared/data is absent")
    return path


TINY_CHAR_LM: dict[str, object] = {
    "text_chars": 20_000, "val_chars": 2_000, "n_heads": 2, "d_model": 16, "context_len": 16,
    "batch_size": 4, "steps": 6, "warmup_steps": 1, "eval_batches": 2, "threads": 1,
}
"""Settings of a char-LM study (a `CharTextConfig`) small enough to train in about a second."""


@pytest.fixture
def tiny_char_lm(monkeypatch: pytest.MonkeyPatch, shared_data: Path) -> dict[str, object]:
    """`TINY_CHAR_LM` (a fresh copy), with the data mirror set and downloads refused.

    Tests add what their study needs: ``{**tiny_char_lm, "eval_every": 3, "n_layers": 1}``,
    then ``dataclasses.replace(study.config("quick"), **settings)``.
    """
    monkeypatch.setenv("SCRATCHFORMER_DATA", str(shared_data))
    monkeypatch.setenv("SCRATCHFORMER_OFFLINE", "1")
    return dict(TINY_CHAR_LM)
