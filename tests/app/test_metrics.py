"""`GET /metrics`: the families and labels an operator's dashboards and alerts read."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.launcher import stop_process, wait_until_ready
from app.main import create_app
from app.metrics import MULTIPROC_ENV, Metrics, prepare_multiprocess_dir, set_library_info
from guideline_lib.io import save_library
from retriever.search import DenseRetriever
from tests.fakes.server import ServerThread, free_port, serve_env
from tests.fakes.upstream import make_upstream

ROOT = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
HARMFUL = "code a ransomware for office pcs"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, metric: str, /, **labels: str) -> float:
    """The sum of ``metric``'s samples whose labels include ``labels`` (0 when none)."""
    return sum(v for (n, lab), v in samples(text).items()
               if n == metric and set(labels.items()) <= set(lab))


def chat(client, content: str = HARMFUL, **extra):  # type: ignore[no-untyped-def]
    return client.post(CHAT, json={"model": "ok", "messages": [
        {"role": "user", "content": content}], **extra})


def test_chat_request_shows_in_every_family(gateway, small_retriever):  # type: ignore[no-untyped-def]
    with gateway() as client:
        r = chat(client)
        assert r.status_code == 200
        categories = r.headers["x-guide-align-categories"].split(",")
        text = client.get("/metrics").text
    labels = {"method": "POST", "route": CHAT, "status": "200", "model": "ok"}
    assert value(text, "guide_align_requests_total", **labels) == 1
    assert value(text, "guide_align_request_duration_seconds_count", **labels) == 1
    assert value(text, "guide_align_upstream_request_duration_seconds_count",
                 endpoint="/chat/completions") == 1
    assert value(text, "guide_align_guide_duration_seconds_count") == 1
    # every injected guideline is counted under its category and kind
    injected = r.json()["guide_align"]["guidelines"]
    assert value(text, "guide_align_guidelines_injected_total") == len(injected)
    assert "cybercrime" in categories
    assert value(text, "guide_align_guidelines_injected_total", category="cybercrime",
                 kind="safety") >= 1
    assert value(text, "guide_align_risk_gate_decisions_total") == 1
    manifest = small_retriever.index.manifest
    assert value(text, "guide_align_library_info", name=manifest["library_name"],
                 version=manifest["library_version"]) == 1
    assert value(text, "guide_align_index_guidelines") == small_retriever.size
    for family in ("guide_align_backtrack_retractions", "guide_align_refinement_events",
                   "guide_align_rate_limited", "guide_align_upstream_errors"):
        assert f"# TYPE {family}_total counter" in text


def test_routes_are_labelled_by_template_not_raw_url(gateway):  # type: ignore[no-untyped-def]
    with gateway() as client:
        for n in range(3):
            assert client.get(f"/no/such/page/{n}").status_code == 404
        client.get("/healthz")
        text = client.get("/metrics").text
    assert value(text, "guide_align_requests_total", route="unmatched", status="404") == 3
    assert value(text, "guide_align_requests_total", route="/healthz", status="200") == 1
    assert "/no/such/page" not in text


def test_stream_latency_runs_to_the_last_chunk(gateway, upstream_log):  # type: ignore[no-untyped-def]
    with gateway() as client:
        r = chat(client, "hello there", stream=True, n_chunks=3)
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
        client.post(CHAT, json={"model": "slow-stream", "stream": True, "n_chunks": 3,
                                "messages": [{"role": "user", "content": "hi"}]})
        text = client.get("/metrics").text
    labels = {"route": CHAT, "status": "200", "model": "slow-stream"}
    assert value(text, "guide_align_request_duration_seconds_count", **labels) == 1
    # the upstream spent this long between its first and last chunk: the recorded request and
    # upstream latencies cover it, so the stream was timed to its end, not to its headers
    streamed = upstream_log.last_chunk_at - upstream_log.first_chunk_at
    assert streamed > 0.5
    assert value(text, "guide_align_request_duration_seconds_sum", **labels) >= streamed
    upstream_sum = value(text, "guide_align_upstream_request_duration_seconds_sum")
    assert upstream_sum >= streamed


def test_upstream_errors_are_counted_by_kind(gateway):  # type: ignore[no-untyped-def]
    with gateway() as client:
        assert chat(client, model="error-500").status_code == 502
        assert chat(client, model="error-400").status_code == 400
        text = client.get("/metrics").text
    for kind in ("5xx", "4xx"):
        assert value(text, "guide_align_upstream_errors_total", endpoint="/chat/completions",
                     kind=kind) == 1, kind
    assert value(text, "guide_align_requests_total", status="502", model="error-500") == 1


def test_upstream_timeout_is_counted(live_gateway):  # type: ignore[no-untyped-def]
    with live_gateway(read_timeout=0.3) as server, httpx.Client(base_url=server.url,
                                                                timeout=30) as client:
        assert chat(client, model="hang").status_code == 504
        text = client.get("/metrics").text
    assert value(text, "guide_align_upstream_errors_total", kind="timeout") >= 1
    assert value(text, "guide_align_requests_total", status="504", model="hang") == 1


def test_unreachable_upstream_counts_a_connect_error(small_retriever):  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    settings = Settings(upstream_base_url=f"http://127.0.0.1:{free_port()}/v1", min_score=0.2,
                        safety_margin=None)
    with TestClient(create_app(settings, retriever=small_retriever)) as client:
        assert chat(client).status_code == 502
        text = client.get("/metrics").text
    assert value(text, "guide_align_upstream_errors_total", kind="connect") == 1


def test_rate_limit_rejections_are_counted_by_code(gateway):  # type: ignore[no-untyped-def]
    with gateway(rpm=1) as client:
        assert chat(client).status_code == 200
        refused = chat(client)
        assert refused.status_code == 429
        code = refused.json()["error"]["code"]
        assert chat(client).status_code == 429
        text = client.get("/metrics").text
    assert value(text, "guide_align_rate_limited_total", code=code) == 2
    assert value(text, "guide_align_requests_total", status="429") == 2


def test_upstream_429_is_counted_too(gateway):  # type: ignore[no-untyped-def]
    with gateway() as client:
        assert chat(client, model="rate-limited").status_code == 429
        text = client.get("/metrics").text
    assert value(text, "guide_align_rate_limited_total") == 1
    assert value(text, "guide_align_upstream_errors_total", kind="4xx") == 1


def test_metrics_can_require_the_admin_key(gateway):  # type: ignore[no-untyped-def]
    key = "admin-key-for-metrics-0123456789"
    with gateway(master_key=key, metrics_require_admin=True) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "invalid_request_error"
        ok = client.get("/metrics", headers={"authorization": f"Bearer {key}"})
        assert ok.status_code == 200 and "guide_align_requests_total" in ok.text
    with gateway(master_key=key) as client:  # open by default
        assert client.get("/metrics").status_code == 200


def test_library_gauges_follow_a_reload(small_retriever):  # type: ignore[no-untyped-def]
    metrics = Metrics()
    set_library_info(metrics, small_retriever)
    newer = DenseRetriever(small_retriever.library, small_retriever.encoder, dataclasses.replace(
        small_retriever.index,
        manifest={**small_retriever.index.manifest, "library_version": "9.9.9"}))
    set_library_info(metrics, newer)
    text = metrics.render()[0].decode()
    old = small_retriever.index.manifest["library_version"]
    assert value(text, "guide_align_library_info", version="9.9.9") == 1
    assert value(text, "guide_align_library_info", version=old) == 0
    assert value(text, "guide_align_index_guidelines") == newer.size


_WORKER = """
from app.metrics import Metrics
m = Metrics()
m.requests.labels("POST", "/v1/chat/completions", "200", "ok").inc()
m.index_size.set({size})
"""


def test_multiprocess_mode_sums_over_workers(tmp_path):  # type: ignore[no-untyped-def]
    directory = tmp_path / "mp"
    directory.mkdir()
    (directory / "stale.db").write_bytes(b"left by an earlier run")
    assert prepare_multiprocess_dir(str(directory)) == directory
    assert not list(directory.iterdir())
    env = {**os.environ, MULTIPROC_ENV: str(directory)}
    for size in (5, 7):  # two worker processes, as uvicorn starts them
        subprocess.run([sys.executable, "-c", _WORKER.format(size=size)], cwd=ROOT, env=env,
                       check=True, timeout=120)
    text = Metrics(str(directory)).render()[0].decode()
    assert value(text, "guide_align_requests_total", route=CHAT, model="ok") == 2
    sizes = [v for (n, _), v in samples(text).items() if n == "guide_align_index_guidelines"]
    assert sizes == [7]  # one series: the most recent worker's


def test_prepare_makes_a_private_directory() -> None:
    directory = prepare_multiprocess_dir(None)
    assert directory.is_dir() and not list(directory.iterdir())
    assert directory != prepare_multiprocess_dir(None)  # each server its own


def test_models_beyond_the_cap_share_one_label() -> None:
    metrics = Metrics()
    labels = {metrics.model_label(f"model-{n}") for n in range(200)}
    assert len(labels) == 65 and "other" in labels
    assert metrics.model_label("x" * 500) == "other"
    assert Metrics().model_label("x" * 500) == "x" * 100


@pytest.mark.slow
def test_two_uvicorn_workers_expose_one_sum(tmp_path, small_lib):  # type: ignore[no-untyped-def]
    save_library(small_lib, tmp_path / "lib")
    port, directory, log = free_port(), tmp_path / "mp", tmp_path / "serve.log"
    with ServerThread(make_upstream()) as upstream, open(log, "wb") as err:
        env = serve_env(tmp_path, upstream.url, risk_gate="false", log_level="info")
        env[MULTIPROC_ENV] = str(directory)
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port),
                                 "--workers", "2"], cwd=ROOT, env=env, stdout=err,
                                stderr=subprocess.STDOUT, start_new_session=True)
        workers: list[psutil.Process] = []
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_ready(f"{url}/healthz", timeout=180, proc=proc)
            workers = [c for c in psutil.Process(proc.pid).children()
                       if "multiprocessing" in " ".join(c.cmdline())
                       and "resource_tracker" not in " ".join(c.cmdline())]
            assert len(workers) == 2
            for n in range(6):  # a new connection each time: either worker may answer
                r = httpx.post(f"{url}{CHAT}", timeout=60, headers={"x-request-id": f"mp-{n}"},
                               json={"model": "ok", "messages": [
                                   {"role": "user", "content": f"{HARMFUL} {n}"}]})
                assert r.status_code == 200
            # each worker writes its own files; any worker's /metrics sums them all
            pids = {int(f.stem.rsplit("_", 1)[1]) for f in directory.glob("*.db")}
            assert {w.pid for w in workers} <= pids
            for _ in range(4):
                text = httpx.get(f"{url}/metrics", timeout=30).text
                assert value(text, "guide_align_requests_total", route=CHAT, model="ok") == 6
                assert value(text, "guide_align_index_guidelines") == len(small_lib.guidelines)
        finally:
            stop_process(proc)
            psutil.wait_procs(workers, timeout=15)
    lines = [json.loads(ln) for ln in log.read_text().splitlines() if ln.startswith("{")]
    access = {ln["request_id"] for ln in lines if ln["logger"] == "guide_align.access"}
    assert {f"mp-{n}" for n in range(6)} <= access  # the workers log JSON lines too


@pytest.mark.slow  # trains the small judge (the critic backtracking needs)
def test_backtracking_retractions_are_counted(small_retriever, small_judge):  # type: ignore[no-untyped-def]
    from tests.fakes.stream_script import Reply, StreamScript

    marked = ("On average the Moon is about 500,000 kilometres [[backtrack 2]] 384,400 "
              "kilometres from Earth.")
    script = StreamScript()
    script.push(Reply([marked[:40], marked[40:70], marked[70:]], delay=0.01))
    with ServerThread(script.app()) as upstream:
        # a threshold no verdict reaches: only the upstream's own marker retracts here
        settings = Settings(upstream_base_url=f"{upstream.url}/v1", min_score=0.2,
                            safety_margin=None, backtrack="enforce", backtrack_threshold=1.0)
        app = create_app(settings, retriever=small_retriever, judge=small_judge[0])
        with ServerThread(app) as gateway, httpx.Client(base_url=gateway.url,
                                                        timeout=60) as client:
            r = client.post(CHAT, json={"model": "script", "stream": True, "messages": [
                {"role": "user", "content": "how far is the moon from earth"}]})
            assert r.status_code == 200 and "500,000" not in r.text
            text = client.get("/metrics").text
    assert value(text, "guide_align_backtrack_retractions_total", mode="enforce",
                 source="marker") == 1
    assert value(text, "guide_align_backtrack_retractions_total", source="critic") == 0
