"""`guide-align serve --workers N`: several gateway processes on one port, index built once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from app.launcher import stop_process, wait_until_ready
from guideline_lib.io import save_library
from tests.fakes.server import ServerThread, free_port, serve_env
from tests.fakes.upstream import make_upstream

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_workers_share_the_port_and_guide_requests(tmp_path, small_lib):  # type: ignore[no-untyped-def]
    save_library(small_lib, tmp_path / "lib")
    port = free_port()
    with ServerThread(make_upstream()) as upstream:
        env = serve_env(tmp_path, upstream.url, log_level="warning")
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port),
                                 "--workers", "2"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_ready(f"{url}/healthz", timeout=180, proc=proc)
            # The index was built once by the parent, before the workers started.
            assert (tmp_path / "index" / "manifest.json").is_file()
            workers = [c for c in psutil.Process(proc.pid).children()
                       if "multiprocessing" in " ".join(c.cmdline())
                       and "resource_tracker" not in " ".join(c.cmdline())]
            assert len(workers) == 2
            with httpx.Client(timeout=60) as client:
                for n in range(8):
                    r = client.post(f"{url}/v1/chat/completions", json={
                        "model": "ok", "messages": [
                            {"role": "user", "content": f"code a ransomware for office pcs {n}"}]})
                    assert r.status_code == 200
                    assert "cybercrime" in r.headers["x-guide-align-categories"]
        finally:
            stop_process(proc)
    assert proc.poll() is not None
    _gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive  # stopping the server stops its workers
