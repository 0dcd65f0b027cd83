"""What the observability middleware costs a request: a trivial JSON route served with and
without it (request id, timing, metrics, access log line, a no-op span), plus a streamed answer
of 20 chunks, in-process over httpx's ASGI transport, interleaved in rounds. Prints the median
time per request of each and the difference. Logging goes to a null handler at INFO, so the
access line is formatted (JSON) but not written.

    .venv/bin/python bench/observability_overhead.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.logging_setup import JsonFormatter
from app.metrics import Metrics
from app.observability import ObservabilityMiddleware
from app.tracing import tracer_of


def build(observed: bool) -> Starlette:
    async def small(_):  # type: ignore[no-untyped-def]
        return JSONResponse({"ok": True})

    async def stream(_):  # type: ignore[no-untyped-def]
        async def chunks():  # type: ignore[no-untyped-def]
            for n in range(20):
                yield f"data: {{\"n\": {n}}}\n\n".encode()
        return StreamingResponse(chunks(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/small/{x}", small), Route("/stream", stream)])
    app.state.metrics = Metrics()
    app.state.tracer = tracer_of(None)
    if observed:
        app.add_middleware(ObservabilityMiddleware)
    return app


async def per_request(app: Starlette, path: str, n: int) -> float:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://bench") as client:
        started = time.perf_counter()
        for _ in range(n):
            r = await client.get(path)
            assert r.status_code == 200
        return (time.perf_counter() - started) / n * 1e6


async def main(requests: int, rounds: int) -> None:
    handler = logging.StreamHandler(open("/dev/null", "w"))  # noqa: SIM115
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the bench client's own lines
    apps = {False: build(False), True: build(True)}
    for path in ("/small/1", "/stream"):
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(rounds):
            for observed in (False, True):
                times[observed].append(await per_request(apps[observed], path, requests))
        plain, observed = (statistics.median(times[k]) for k in (False, True))
        print(f"{path:10} plain {plain:7.1f} us/request   observed {observed:7.1f} us/request"
              f"   +{observed - plain:6.1f} us ({observed / plain - 1:+.0%})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
