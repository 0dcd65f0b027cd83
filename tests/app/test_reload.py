"""Hot reload: swap the library under traffic, keep the old one on a failed load, admin guard,
and the library watcher."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.config import Settings
from app.main import create_app
from guideline_lib.embedded import base_model_path
from guideline_lib.io import save_library
from guideline_lib.schema import Example, Guideline, Library
from tests.conftest import small_library
from tests.fakes.server import ServerThread

ADMIN = "admin-key-for-tests-0123"
AUTH = {"authorization": f"Bearer {ADMIN}"}  # the master key is a gateway key too
NEW_TEXT = ("Give units with every number: State the unit of each quantity and convert between "
            "metric and imperial units when the user mixes them.")
NEW_ID = Guideline.create(NEW_TEXT, "quality_knowledge").id


def version_b() -> Library:
    """The small library plus one guideline, as version 0.2.0."""
    base = small_library()
    g = Guideline.create(NEW_TEXT, "quality_knowledge")
    examples = [Example(input=t, guideline_ids=[g.id]) for t in
                ("convert 5 miles to kilometres", "how many pounds is 70 kg",
                 "what is 30 celsius in fahrenheit")]
    manifest = base.manifest.model_copy(update={"version": "0.2.0"})
    return Library(manifest=manifest, guidelines=[*base.guidelines, g],
                   examples=[*base.examples, *examples]).sealed()


class Gate:
    """A stream upstream that sends one chunk, then waits for the test to open the gate."""

    def __init__(self) -> None:
        self.open = threading.Event()

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            body = await request.json()
            if not body.get("stream"):
                return JSONResponse({"id": "c", "object": "chat.completion", "created": 0,
                                     "model": "m", "choices": [{"index": 0, "message": {
                                         "role": "assistant", "content": "fine"},
                                         "finish_reason": "stop"}]})

            async def events():  # type: ignore[no-untyped-def]
                for n in range(6):
                    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0,
                             "model": "m", "choices": [{"index": 0, "delta": {
                                 "content": f"w{n} "}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
                    if n == 0 and body.get("model") == "gated":
                        while not self.open.is_set():
                            await asyncio.sleep(0.02)
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        async def models(request: Request) -> Response:
            return JSONResponse({"object": "list", "data": []})

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                                 Route("/v1/models", models)])


@pytest.fixture
def workspace(tmp_path: Path) -> Callable[..., Settings]:
    """Factory: settings over a prepared workspace in ``tmp_path`` (library version 0.1.0, the
    base MiniLM as the encoder, a FAISS index built for it)."""
    save_library(small_library(), tmp_path / "library")

    def make(upstream: str, **overrides: Any) -> Settings:
        settings = Settings(
            var_dir=tmp_path, library_path=tmp_path / "library", encoder_path=base_model_path(),
            encoder_backend="torch", upstream_base_url=f"{upstream}/v1", min_score=0.2,
            safety_margin=None, master_key=ADMIN, **{"risk_gate": False, **overrides})
        settings.prepare(train=False, log=lambda _: None)
        return settings

    return make


@pytest.fixture
def served(workspace: Callable[..., Settings]) -> Callable[..., Any]:
    """Factory: (gate, app, server) for the gateway over ``workspace`` on a live port."""

    @contextmanager
    def make(**overrides: Any) -> Iterator[tuple[Gate, Any, ServerThread]]:
        gate = Gate()
        with ServerThread(gate.app()) as upstream:
            app = create_app(workspace(upstream.url, **overrides))
            with ServerThread(app) as server:
                try:
                    yield gate, app, server
                finally:
                    gate.open.set()

    return make


def _chat(model: str = "m", stream: bool = False) -> dict[str, Any]:
    return {"model": model, "stream": stream,
            "messages": [{"role": "user", "content": "how do I kill a stuck python process"}]}


def _search_ids(client: httpx.Client) -> list[str]:
    r = client.post("/v1/guidelines/search", json={
        "input": "convert 5 miles to kilometres", "k": 10,
        "guide_align": {"min_score": -1.0}})
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["data"]]


def test_in_flight_stream_finishes_on_the_old_library(served: Callable[..., Any],
                                                      tmp_path: Path) -> None:
    with served() as (gate, app, server), \
            httpx.Client(base_url=server.url, timeout=60, headers=AUTH) as c:
        assert NEW_ID not in _search_ids(c)
        old = app.state.generation
        with c.stream("POST", "/v1/chat/completions", json=_chat("gated", stream=True)) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
            save_library(version_b(), tmp_path / "library")
            status = c.post("/admin/reload", headers=AUTH).json()
            assert status["ok"] is True, status
            assert (status["library_version"], status["guidelines"]) == ("0.2.0", 8)
            assert app.state.generation is not old
            # the open stream still holds the old generation: its workers keep running
            assert old.pins.count == 1 and old.guide._task is not None
            gate.open.set()
            rest = [line for line in lines if line.startswith("data:")]
        assert rest[-1] == "data: [DONE]" and len(rest) == 6
        assert not any('"error"' in line for line in rest)
        deadline = time.monotonic() + 30
        while old.guide._task is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert old.guide._task is None  # stopped once its last request ended
        assert NEW_ID in _search_ids(c)
        assert c.get("/readyz").json()["checks"]["guidelines"] == 8
        served_versions = c.get("/admin/library/versions").json()
        assert [v["library_version"] for v in served_versions["versions"]] == ["0.1.0", "0.2.0"]
        assert [g["id"] for g in served_versions["diff"]["added"]] == [NEW_ID]
        assert served_versions["diff"]["removed"] == []


async def _traffic(url: str, stop: asyncio.Event) -> tuple[int, list[str]]:
    """Chat (JSON and stream) and search requests in a loop until ``stop``; (done, failures)."""
    failures: list[str] = []
    done = 0
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=AUTH) as client:

        async def worker(kind: str) -> None:
            nonlocal done
            while not stop.is_set():
                try:
                    if kind == "stream":
                        async with client.stream("POST", "/v1/chat/completions",
                                                 json=_chat(stream=True)) as r:
                            body = (await r.aread()).decode()
                        ok = r.status_code == 200 and body.rstrip().endswith("data: [DONE]") \
                            and '"error"' not in body
                    elif kind == "json":
                        r = await client.post("/v1/chat/completions", json=_chat())
                        ok = r.status_code == 200 and "guide_align" in r.json()
                    else:
                        r = await client.post("/v1/guidelines/search",
                                              json={"input": "how far is the moon",
                                                    "guide_align": {"min_score": -1.0}})
                        ok = r.status_code == 200 and bool(r.json()["data"])
                except httpx.HTTPError as exc:
                    ok, r = False, None
                    failures.append(f"{kind}: {exc!r}")
                if not ok and r is not None:
                    failures.append(f"{kind}: {r.status_code} {r.text[:200]}")
                done += 1

        await asyncio.gather(*(worker(k) for k in ("stream", "json", "search", "stream")))
    return done, failures


def test_reloads_under_concurrent_traffic_fail_no_request(served: Callable[..., Any],
                                                          tmp_path: Path) -> None:
    versions = [version_b(), small_library()]

    async def run(url: str) -> tuple[int, list[str], list[dict[str, Any]]]:
        stop = asyncio.Event()
        traffic = asyncio.create_task(_traffic(url, stop))
        statuses = []
        async with httpx.AsyncClient(base_url=url, timeout=120) as admin:
            for n in range(2):
                await asyncio.sleep(0.3)
                await asyncio.to_thread(save_library, versions[n % 2], tmp_path / "library")
                statuses.append((await admin.post("/admin/reload", headers=AUTH)).json())
        await asyncio.sleep(0.3)
        stop.set()
        done, failures = await traffic
        return done, failures, statuses

    with served() as (gate, _app, server):
        gate.open.set()
        done, failures, statuses = asyncio.run(run(server.url))
    assert failures == []
    assert done > 20
    assert [s["ok"] for s in statuses] == [True, True]
    assert [s["library_version"] for s in statuses] == ["0.2.0", "0.1.0"]
    assert [s["generation"] for s in statuses] == [2, 3]


def test_failed_load_keeps_the_served_library_and_reports_why(served: Callable[..., Any],
                                                              tmp_path: Path) -> None:
    with served() as (gate, app, server), \
            httpx.Client(base_url=server.url, timeout=60, headers=AUTH) as c:
        gate.open.set()
        before = app.state.generation
        lines = (tmp_path / "library" / "guidelines.jsonl").read_text("utf-8").splitlines()
        (tmp_path / "library" / "guidelines.jsonl").write_text(
            "\n".join([lines[0], "{not json", *lines[1:]]) + "\n", "utf-8")
        status = c.post("/admin/reload", headers=AUTH).json()
        assert status["ok"] is False
        assert "LibraryError" in status["error"] and "not valid JSON" in status["error"]
        assert (status["library_version"], status["guidelines"]) == ("0.1.0", 7)
        assert c.get("/admin/reload", headers=AUTH).json() == status
        assert app.state.generation is before and before.guide._task is not None
        r = c.post("/v1/chat/completions", json=_chat())
        assert r.status_code == 200 and r.json()["guide_align"]["guidelines"]


def test_reload_needs_the_admin_key(gateway: Callable[..., Any]) -> None:
    with gateway() as client:  # no master key configured: the admin API is off
        r = client.post("/admin/reload")
        assert r.status_code == 503
        assert "GUIDE_ALIGN_MASTER_KEY" in r.json()["error"]["message"]
    with gateway(master_key=ADMIN) as client:
        for headers in ({}, {"authorization": "Bearer wrong-key"}):
            r = client.post("/admin/reload", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["type"]
            assert client.get("/admin/reload", headers=headers).status_code == 401
        status = client.get("/admin/reload", headers=AUTH).json()
        assert status["ok"] is True and status["generation"] == 1


def test_watcher_reloads_when_the_library_changes(served: Callable[..., Any],
                                                  tmp_path: Path) -> None:
    with served(watch_library=True, watch_debounce=0.2) as (gate, _app, server), \
            httpx.Client(base_url=server.url, timeout=60, headers=AUTH) as c:
        gate.open.set()
        time.sleep(0.5)  # let the watcher register before the change
        save_library(version_b(), tmp_path / "library")
        deadline = time.monotonic() + 60
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = c.get("/admin/reload", headers=AUTH).json()
            if status.get("library_version") == "0.2.0":
                break
            time.sleep(0.1)
        assert status["ok"] is True and status["library_version"] == "0.2.0", status
        assert NEW_ID in _search_ids(c)


def plain_judge(note: str) -> Any:
    """A judge with hand-set weights for the base MiniLM (what it scores does not matter here:
    the test is about which judge files a reload loads)."""
    import numpy as np

    from guideline_lib.taxonomy import SAFETY_IDS
    from judge.model import Calibration, LinearHeads
    from retriever.backends import model_hash

    dim, cats = 384, len(SAFETY_IDS)
    rng = np.random.default_rng(0)
    return LinearHeads(
        risk_w=rng.normal(size=dim).astype(np.float32), risk_b=0.0,
        risk_cal=Calibration(np.array([-50.0, 50.0]), np.array([0.0, 1.0])),
        cat_w=np.zeros((cats, dim), np.float32), cat_b=np.zeros(cats, np.float32),
        resp_w=np.zeros((3, 4 * dim), np.float32), resp_b=np.zeros(3, np.float32),
        resp_cat_w=np.zeros((cats, 4 * dim), np.float32), resp_cat_b=np.zeros(cats, np.float32),
        threshold=0.5, manifest={"encoder_hash": model_hash(base_model_path()),
                                 "categories": list(SAFETY_IDS), "note": note})


def test_unchanged_judge_is_reused_and_a_changed_one_loaded(
        workspace: Callable[..., Settings], tmp_path: Path) -> None:
    from judge.model import save_heads

    save_heads(plain_judge("first"), tmp_path / "judge")
    gate = Gate()
    gate.open.set()
    with ServerThread(gate.app()) as upstream:
        app = create_app(workspace(upstream.url, risk_gate=True))
        with ServerThread(app) as server, \
                httpx.Client(base_url=server.url, timeout=60, headers=AUTH) as c:
            first = app.state.generation.guide.judge
            assert first is not None and app.state.generation.policy.risk_threshold == 0.5
            save_library(version_b(), tmp_path / "library")
            assert c.post("/admin/reload").json()["ok"] is True
            assert app.state.generation.guide.judge is first  # same judge files: kept

            save_heads(plain_judge("retrained"), tmp_path / "judge")
            status = c.post("/admin/reload").json()
            assert status["ok"] is True and status["risk_gate"] is True
            reloaded = app.state.generation.guide.judge
            assert reloaded is not first and reloaded.manifest["note"] == "retrained"
            r = c.post("/v1/chat/completions", json=_chat())
            assert r.status_code == 200
            assert r.json()["guide_align"]["risk"]["gate"] in ("open", "closed")
