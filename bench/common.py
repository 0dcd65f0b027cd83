"""Helpers shared by benchmarks: subprocess servers, percentiles, machine notes, results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str], *, env: dict[str, str] | None = None, log: Path | None = None)\
        -> subprocess.Popen[bytes]:
    """Start a server process in its own session, output to ``log``."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    """Wait until ``url`` answers 200 or fail if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(map(str, proc.args))} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a server process group."""
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile in milliseconds of values in seconds."""
    return float(np.percentile(np.array(values), q) * 1000) if values else float("nan")


def machine() -> dict[str, Any]:
    """A note of the machine the figures come from."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0],
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}


# Where a run writes unless asked otherwise: ignored by git, so a run leaves the checkout clean.
UNTRACKED = RESULTS.parent.parent / "var" / "bench"


def add_out_argument(parser: argparse.ArgumentParser) -> None:
    """``--out``: without it results go to var/bench/ (untracked); ``--out`` alone writes the
    committed file under bench/results/, ``--out PATH`` writes PATH."""
    parser.add_argument("--out", nargs="?", const="", default=None, metavar="PATH",
                        help="write bench/results/<name>.json (or PATH) instead of var/bench/")


def results_path(name: str, out: str | Path | None = None) -> Path:
    """Where results named ``name`` are written for an ``--out`` value (see add_out_argument)."""
    if out is None:
        return UNTRACKED / f"{name}.json"
    if str(out) == "":
        return RESULTS / f"{name}.json"
    return Path(out)


def save_results(name: str, data: dict[str, Any], out: str | Path | None = None) -> Path:
    """Write results JSON where ``results_path`` says."""
    path = results_path(name, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


TOPICS = ["sourdough bread", "a stuck python process", "tax deadlines", "the french revolution",
          "a wedding toast", "photosynthesis", "a job interview", "sql joins", "marathon training",
          "a lost password", "an angry neighbour", "a murder mystery plot", "vaccines",
          "quantum tunnelling", "a phishing email I got", "budget travel in portugal",
          "my landlord", "rust lifetimes", "a chess opening", "sleep problems"]
ASKS = ["Explain", "Give me tips about", "Write a short note on", "What should I know about",
        "Summarise the debate on", "Help me think through", "List common mistakes with",
        "Compare two approaches to"]


def prompts(n: int) -> list[str]:
    """``n`` distinct synthetic prompts written for the benchmarks (no evaluation data)."""
    out = []
    for i in range(n):
        ask = ASKS[i % len(ASKS)]
        topic = TOPICS[(i // len(ASKS)) % len(TOPICS)]
        out.append(f"{ask} {topic} (case {i}).")
    return out
