"""Run an ASGI app with uvicorn in a background thread on a free loopback port."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_env(tmp: Path, upstream_url: str, **settings: str) -> dict[str, str]:
    """The environment of a `guide-align serve` child over the library saved at ``tmp/lib``:
    artifacts under ``tmp``, the base encoder on torch, ``settings`` as more GUIDE_ALIGN_*."""
    from guideline_lib.embedded import base_model_path

    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "GUIDE_ALIGN_UPSTREAM_BASE_URL": f"{upstream_url}/v1",
           "GUIDE_ALIGN_LIBRARY_PATH": str(tmp / "lib"), "GUIDE_ALIGN_VAR_DIR": str(tmp / "var"),
           "GUIDE_ALIGN_INDEX_PATH": str(tmp / "index"),
           "GUIDE_ALIGN_ENCODER_PATH": str(base_model_path()),
           "GUIDE_ALIGN_ENCODER_BACKEND": "torch", "GUIDE_ALIGN_MIN_SCORE": "0.2"}
    return env | {f"GUIDE_ALIGN_{k.upper()}": v for k, v in settings.items()}


class ServerThread:
    """uvicorn serving ``app`` in a thread; use as a context manager."""

    def __init__(self, app: Any, port: int | None = None, **options: Any):
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", **options)  # options: more uvicorn.Config keywords
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server thread failed to start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
