"""Time from `guide-align up` to the first answered chat request, on a fresh artifact directory.

    python bench/first_start.py [--mode quick|full] [--var-dir DIR] [--port 18400]

Starts `guide-align up` with ``GUIDE_ALIGN_VAR_DIR`` pointing at an empty directory (a temporary
one by default, so the checkout's `var/` is never touched), sends the README's first request
until it is answered, prints the seconds it took, the stage lines `up` printed and what
`/readyz` says, then stops `up` (which stops llama.cpp and the background training). Nothing
else may load the machine for the figure to mean anything: it prints the load average too.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
REQUEST = {"model": "smollm2-135m-instruct", "max_tokens": 32,
           "messages": [{"role": "user", "content": "How do I kill a stuck Python process?"}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["quick", "full"], default="quick")
    ap.add_argument("--var-dir", type=Path, default=None, help="an empty directory (default: a "
                    "temporary one)")
    ap.add_argument("--port", type=int, default=18400)
    ap.add_argument("--llm-port", type=int, default=18481)
    ap.add_argument("--timeout", type=float, default=3600.0)
    args = ap.parse_args()

    var = args.var_dir or Path(tempfile.mkdtemp(prefix="guide-align-first-start-"))
    log = var.with_name(var.name + ".up.log")
    env = {**os.environ, "GUIDE_ALIGN_VAR_DIR": str(var), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "cli.main", "up", f"--{args.mode}", "--port", str(args.port),
           "--llm-port", str(args.llm_port)]
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{args.port}"
    first = None
    try:
        while proc.poll() is None and time.monotonic() - started < args.timeout:
            try:
                r = httpx.post(f"{url}/v1/chat/completions", json=REQUEST, timeout=300)
                if r.status_code == 200:
                    first = time.monotonic() - started
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        if first is not None:
            ready = httpx.get(f"{url}/readyz", timeout=30).json()
            print(f"first answer after {first:.1f} s ({args.mode} mode)")
            print(f"readyz artifacts: {ready['checks'].get('artifacts')}")
        else:
            print(f"no answer (exit code {proc.poll()}); see {log}")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)  # `up` stops llama.cpp and the training
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print("stage lines:")
    for line in log.read_text("utf-8", errors="replace").splitlines():
        if line.startswith(("✓", "✗", "mode:", "llama.cpp answered")):
            print(f"  {line if len(line) < 140 else line[:110] + ' ... ' + line[-25:]}")


if __name__ == "__main__":
    main()
