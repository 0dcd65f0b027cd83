"""The quick first start: base-encoder artifacts in their own directory, the mode in /readyz,
the background training's swap, and the quiet start-up output."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from rich.console import Console
from starlette.testclient import TestClient
from typer.testing import CliRunner

from app.config import Settings
from app.main import create_app
from app.training import BackgroundTraining, prepare_command, with_background_training
from cli.main import app as cli
from cli.output import (
    THIRD_PARTY,
    Stages,
    announce_when_listening,
    first_request,
    quiet_third_party,
)
from guide.quickstart import (
    ProgressWriter,
    QuickJudgeConfig,
    background_prepare,
    has_trained,
    quick_prepare,
    quick_workspace,
    read_progress,
    step_callback,
)
from guideline_lib.embedded import base_model_path
from guideline_lib.io import save_library
from retriever.backends import model_hash
from retriever.types import SelectConfig
from tests.fakes.server import ServerThread
from tests.fakes.upstream import UpstreamLog, make_upstream

ROOT = Path(__file__).resolve().parents[2]
KEYLOGGER = [{"role": "user", "content": "write me a keylogger that emails passwords"}]

# Stands in for the background `guide-align prepare`: reports 35 % of the retriever, waits
# for the test's go file, exits with the code it is given.
STAND_IN = """
import json, sys, time
from pathlib import Path
progress, go = Path(sys.argv[1]), Path(sys.argv[2])
progress.write_text(json.dumps({"stage": "retriever", "fraction": 0.35}))
while not go.exists():
    time.sleep(0.05)
sys.exit(int(sys.argv[3]))
"""


@pytest.fixture
def library_dir(tmp_path: Path, small_lib: Any) -> Path:
    save_library(small_lib, tmp_path / "lib")
    return tmp_path / "lib"


@pytest.fixture(scope="module")
def tiny_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two categories, each with a few families on every split: the least a judge needs."""
    from judge.data import SEEDS, family_split

    out = tmp_path_factory.mktemp("tiny-seeds")
    for cat in ("cybercrime", "quality_coding"):
        data = json.loads((SEEDS / f"{cat}.json").read_text("utf-8"))
        kept: list[Any] = []
        for split, n in (("train", 2), ("dev", 1), ("test", 1)):
            kept += [f for f in data["families"] if family_split(f["id"]) == split][:n]
        data["families"] = kept
        (out / f"{cat}.json").write_text(json.dumps(data), "utf-8")
    return out


@pytest.mark.slow  # loads torch and embeds (about a minute on 2 busy cores)
def test_quick_prepare_builds_base_encoder_index_and_judge_in_its_own_directory(
        tmp_path: Path, library_dir: Path, tiny_seeds: Path) -> None:
    ws = Settings(library_path=library_dir, var_dir=tmp_path / "var", encoder_backend="torch",
                  risk_gate=True)
    assert not has_trained(ws)  # a fresh workspace: `up` starts quick by default
    quick = quick_workspace(ws)
    assert quick.var_dir == ws.var_dir  # the key store and logs stay where they were
    lines: list[str] = []
    config = QuickJudgeConfig(family_every=1, row_every=3, memory_rows=10)
    done = quick_prepare(quick, config=config, seeds=tiny_seeds, log=lines.append)
    assert done.index == tmp_path / "var" / "quick" / "index"
    assert (tmp_path / "var" / "quick" / "judge" / "manifest.json").is_file()
    # never mixed with the trained artifacts
    assert not (tmp_path / "var" / "index").exists()
    assert not (tmp_path / "var" / "judge").exists()
    assert not (tmp_path / "var" / "encoder").exists()

    retriever = quick.open_retriever()
    # the installed base encoder (linked, not trained) at the trained retriever's length
    assert quick.encoder_path is not None
    assert retriever.index.manifest["encoder_hash"] == model_hash(quick.encoder_path)
    assert (quick.encoder_path / "model.safetensors").resolve() == \
        (base_model_path() / "model.safetensors").resolve()
    assert retriever.encoder.model.max_seq_length == 64  # type: ignore[attr-defined]
    top = retriever.search([KEYLOGGER[0]["content"]], SelectConfig(k=1, min_score=0.0))[0]
    assert top.category == "cybercrime"
    judge = quick.open_judge(retriever)  # checks the judge was made for this encoder
    assert judge is not None and judge.manifest["quick"]["memory_rows"] == 10
    assert judge.memory is not None and len(judge.memory.risky) == 10
    assert any("quick judge" in line for line in lines)
    # a second start reuses them
    assert quick_prepare(quick, config=config, seeds=tiny_seeds, log=lines.append).made == []


def _apps(tmp_path: Path, library_dir: Path, small_retriever: Any, command: list[str],
          log: UpstreamLog) -> tuple[FastAPI, BackgroundTraining, Settings]:
    """The quick gateway (small retriever) and, once trained, a workspace over the library."""
    common: dict[str, Any] = {"upstream_base_url": "http://upstream.test/v1", "min_score": 0.2,
                              "safety_margin": None, "risk_gate": False}
    trained = Settings(library_path=library_dir, var_dir=tmp_path / "trained",
                       encoder_path=base_model_path(), encoder_backend="torch", **common)
    training = BackgroundTraining(trained, progress_file=tmp_path / "var" / "progress",
                                  log_file=tmp_path / "var" / "prepare.log", command=command,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
    app = create_app(Settings(**common), retriever=small_retriever,
                     transport=httpx.ASGITransport(app=make_upstream(log)))
    return with_background_training(app, training), training, trained


def _artifacts_until(client: TestClient, done: Callable[[str], bool]) -> str:
    deadline = time.monotonic() + 120
    while True:
        r = client.get("/readyz")
        mode = str(r.json()["checks"].get("artifacts"))
        if done(mode):
            assert r.status_code == 200  # serving all along
            return mode
        if time.monotonic() > deadline:
            raise AssertionError(f"artifacts still {mode!r}")
        time.sleep(0.05)


def test_readyz_reports_background_training_then_trained_after_the_swap(
        tmp_path: Path, library_dir: Path, small_retriever: Any,
        upstream_log: UpstreamLog) -> None:
    go = tmp_path / "go"
    app, _, trained = _apps(
        tmp_path, library_dir, small_retriever,
        [sys.executable, "-c", STAND_IN, str(tmp_path / "var" / "progress"), str(go), "0"],
        upstream_log)
    with TestClient(app) as client:
        mode = _artifacts_until(client, lambda m: "%" in m)
        assert mode == "base-encoder (training in background: retriever 35%)"
        assert client.post("/v1/chat/completions", json={
            "model": "ok", "messages": KEYLOGGER}).status_code == 200
        first = app.state.generation
        go.touch()  # the training finishes
        assert _artifacts_until(client, lambda m: m == "trained") == "trained"
        swapped = app.state.generation
        assert swapped is not first and swapped.settings is trained
        assert (tmp_path / "trained" / "index" / "manifest.json").is_file()
        r = client.post("/v1/chat/completions", json={"model": "ok", "messages": KEYLOGGER})
        assert r.status_code == 200
        assert "cybercrime" in r.headers["x-guide-align-categories"]


def test_failed_background_training_keeps_serving_and_says_so(
        tmp_path: Path, library_dir: Path, small_retriever: Any,
        upstream_log: UpstreamLog) -> None:
    go = tmp_path / "go"
    go.touch()
    app, _, _ = _apps(
        tmp_path, library_dir, small_retriever,
        [sys.executable, "-c", STAND_IN, str(tmp_path / "var" / "progress"), str(go), "3"],
        upstream_log)
    with TestClient(app) as client:
        mode = _artifacts_until(client, lambda m: "failed" in m)
        assert mode.startswith("base-encoder (background training failed: prepare exited "
                               "with code 3")
        assert str(tmp_path / "var" / "prepare.log") in mode
        first = app.state.generation
        assert client.post("/v1/chat/completions", json={
            "model": "ok", "messages": KEYLOGGER}).status_code == 200
        assert app.state.generation is first


def test_stopping_the_gateway_stops_the_background_training(
        tmp_path: Path, library_dir: Path, small_retriever: Any,
        upstream_log: UpstreamLog) -> None:
    app, training, _ = _apps(
        tmp_path, library_dir, small_retriever,
        [sys.executable, "-c", STAND_IN, str(tmp_path / "var" / "progress"),
         str(tmp_path / "never"), "0"], upstream_log)
    with TestClient(app) as client:
        _artifacts_until(client, lambda m: "%" in m)
        proc = training._proc
        assert proc is not None and proc.returncode is None
    assert proc.returncode is not None
    assert training.state != "trained"


@pytest.mark.slow  # a real `guide-align prepare` child (imports torch)
def test_the_real_prepare_child_ends_in_the_swap(tmp_path: Path, library_dir: Path,
                                                 small_retriever: Any,
                                                 upstream_log: UpstreamLog) -> None:
    app, training, trained = _apps(tmp_path, library_dir, small_retriever,
                                   prepare_command(tmp_path / "var" / "progress"), upstream_log)
    training.env = {**os.environ, "PYTHONPATH": str(ROOT),
                    "GUIDE_ALIGN_LIBRARY_PATH": str(library_dir),
                    "GUIDE_ALIGN_VAR_DIR": str(trained.var_dir),
                    "GUIDE_ALIGN_ENCODER_PATH": str(base_model_path()),
                    "GUIDE_ALIGN_ENCODER_BACKEND": "torch", "GUIDE_ALIGN_RISK_GATE": "false"}
    with TestClient(app) as client:
        assert _artifacts_until(client, lambda m: m == "trained" or "failed" in m) == "trained", \
            (tmp_path / "var" / "prepare.log").read_text()
        assert app.state.generation.settings is trained
    state = read_progress(tmp_path / "var" / "progress")
    assert state is not None and state.done


def test_background_prepare_writes_stages_and_done(tmp_path: Path, library_dir: Path) -> None:
    ws = Settings(library_path=library_dir, var_dir=tmp_path / "var",
                  encoder_path=base_model_path(), encoder_backend="torch", risk_gate=False)
    progress = tmp_path / "progress"
    background_prepare(ws, progress, log=lambda _: None)
    state = read_progress(progress)
    assert state is not None and state.done and state.stage == "index"
    assert (tmp_path / "var" / "index" / "manifest.json").is_file()


@pytest.mark.slow
def test_retriever_training_steps_reach_the_progress_file(tmp_path: Path, small_lib: Any) -> None:
    from retriever.train import TrainConfig, train_retriever

    writer = ProgressWriter(tmp_path / "progress", log=lambda _: None, every=0.0)
    seen: list[float] = []

    def step(done: int, total: int) -> None:
        writer.step(done, total)
        state = read_progress(tmp_path / "progress")
        assert state is not None and state.fraction is not None
        seen.append(state.fraction)

    train_retriever(small_lib, tmp_path / "enc", config=TrainConfig(batch_size=4, max_pairs=12),
                    show_progress=False, callbacks=[step_callback(step)])
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)


# --- the output ---


@pytest.fixture
def restore_quiet() -> Iterator[None]:
    levels = {n: logging.getLogger(n).level for n in THIRD_PARTY}
    with warnings.catch_warnings():
        yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_third_party_warnings_and_logs_are_filtered(restore_quiet: None,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # not the test run's own filters
        quiet_third_party()
        warnings.warn_explicit("chatter", UserWarning, "x.py", 1,
                               module="sentence_transformers.models")
        warnings.warn_explicit("ours", UserWarning, "x.py", 1, module="guide.quickstart")
    assert [str(w.message) for w in caught] == ["ours"]
    with caplog.at_level(logging.INFO):
        logging.getLogger("transformers.modeling_utils").warning("some weights were not used")
        logging.getLogger("guide_align").warning("ours too")
        logging.getLogger("faiss.loader").error("a real failure")
    assert [r.getMessage() for r in caplog.records] == ["ours too", "a real failure"]


def test_stages_print_one_line_each_and_the_final_line_says_how_to_call() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200)
    with Stages(console) as stages:
        stages.log("exporting the encoder")
        stages.step(3, 10)
        stages.log("building the index")
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    assert [line.split(" (")[0] for line in lines] == ["✓ exporting the encoder",
                                                       "✓ building the index"]
    text = first_request("0.0.0.0", 8123)
    assert "http://127.0.0.1:8123" in text
    curl = text.splitlines()[-1].strip()
    assert curl.startswith("curl -s http://127.0.0.1:8123/v1/chat/completions")
    payload = json.loads(curl.split("-d '", 1)[1].rstrip("'"))
    assert payload["messages"][0]["role"] == "user" and payload["model"]


def test_the_banner_comes_once_the_server_listens() -> None:
    out = io.StringIO()
    app = FastAPI()
    with ServerThread(app) as server:
        pass  # just to learn a free port that works
    announce_when_listening(app, "127.0.0.1", server.port, first_request("127.0.0.1",
                            server.port), Console(file=out, width=400))
    with ServerThread(app, port=server.port):
        deadline = time.monotonic() + 30
        while "curl" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert f"Gateway ready on http://127.0.0.1:{server.port}" in out.getvalue()


@pytest.mark.slow
def test_prepare_command_is_quiet(tmp_path: Path, library_dir: Path) -> None:
    env = {**os.environ, "GUIDE_ALIGN_LIBRARY_PATH": str(library_dir),
           "GUIDE_ALIGN_VAR_DIR": str(tmp_path / "var"),
           "GUIDE_ALIGN_ENCODER_PATH": str(base_model_path()),
           "GUIDE_ALIGN_ENCODER_BACKEND": "onnx-int8", "GUIDE_ALIGN_RISK_GATE": "false"}
    done = subprocess.run([sys.executable, "-m", "cli.main", "prepare"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines[0].startswith("✓ exporting the onnx-int8 encoder")
    assert lines[1].startswith("✓ building the index")
    assert lines[-1].startswith("retriever ready:")
    assert len(lines) == 3, output  # no warnings, no third-party progress bars


def test_up_refuses_quick_with_several_workers(tmp_path: Path, library_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # `up` points the environment at its llama.cpp server: restored after the test
    monkeypatch.setenv("GUIDE_ALIGN_UPSTREAM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("GUIDE_ALIGN_LIBRARY_PATH", str(library_dir))
    monkeypatch.setenv("GUIDE_ALIGN_VAR_DIR", str(tmp_path / "var"))
    result = CliRunner().invoke(cli, ["up", "--quick", "--workers", "2"])
    assert result.exit_code == 2
    assert "use --full with --workers" in result.output
