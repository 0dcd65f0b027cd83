"""The `guide-align` command: serve, up (the whole local system), prepare, and the groups."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from app.config import Settings
from cli.common import console, fail, settings
from cli.evaluate import eval_command
from cli.finetune import app as finetune_app
from cli.judge import app as judge_app
from cli.keys import app as keys_app
from cli.library import app as library_app
from cli.output import Stages, announce_when_listening, first_request, quiet_third_party
from cli.redteam import app as redteam_app
from cli.refine import app as refine_app
from cli.retriever import app as retriever_app
from guide.quickstart import quick_workspace

app = typer.Typer(help="Guide-Align: guideline-retrieval alignment gateway for LLMs.",
                  no_args_is_help=True)
app.add_typer(library_app, name="library")
app.add_typer(retriever_app, name="retriever")
app.add_typer(judge_app, name="judge")
app.add_typer(finetune_app, name="finetune")
app.add_typer(keys_app, name="keys")
app.add_typer(redteam_app, name="redteam")
app.add_typer(refine_app, name="refine")
app.command(name="eval")(eval_command)


def _prepare(ws: Settings, *, train: bool, quick: bool = False) -> None:
    """Make the artifacts ready (``quick``: the quick start's, for the base encoder), one line
    per stage."""
    from guide.quickstart import quick_prepare
    from guideline_lib.io import LibraryError
    from retriever.encoder import EncoderError

    quiet_third_party()
    try:
        with Stages(console) as stages:
            done = quick_prepare(ws, log=stages.log) if quick else \
                ws.prepare(train=train, log=stages.log)
    except (LibraryError, EncoderError) as exc:
        raise fail(str(exc)) from None
    made = f" (made: {'; '.join(done.made)})" if done.made else ""
    console.print(f"retriever ready: encoder {done.backend_encoder} ({ws.encoder_backend}), "
                  f"index {done.index}{made}", highlight=False)


def _run_gateway(ws: Settings, served: Any = None, *, banner: str | None = None) -> None:
    """Run ``served`` (default: the app for ``ws``); ``banner`` is printed once it listens."""
    import uvicorn

    from app.logging_setup import configure_logging
    from app.main import create_app
    from app.metrics import MULTIPROC_ENV, prepare_multiprocess_dir
    from app.scrub import install_scrub_filter, settings_secrets
    from app.server import uvicorn_options

    configure_logging(ws)  # JSON lines (LOG_FORMAT); uvicorn's loggers too (log_config None)
    install_scrub_filter(settings_secrets(ws))
    # header-read, keep-alive and shutdown timeouts, connection cap (docs/faults.md)
    common: dict[str, Any] = {"host": ws.host, "port": ws.port, "log_level": ws.log_level,
                              "log_config": None, "loop": "auto", "access_log": False,
                              **uvicorn_options(ws)}
    if ws.workers == 1:
        gateway = served if served is not None else create_app(ws)
        if banner:
            announce_when_listening(gateway, ws.host, ws.port, banner, console)
        uvicorn.run(gateway, **common)
        return
    if banner:
        console.print(banner, highlight=False, soft_wrap=True)
    # Several processes: each worker builds its app from the environment (prepare has already
    # made the artifacts, so they only load them). Their metrics meet in one directory.
    # A spawned worker re-imports this module before it answers uvicorn's health pings (15 s
    # on a busy 2-core machine): past the 5 s default it would be killed and restarted forever.
    os.environ[MULTIPROC_ENV] = str(prepare_multiprocess_dir(os.environ.get(MULTIPROC_ENV)))
    uvicorn.run("app.observability:worker_app", factory=True, workers=ws.workers,
                timeout_worker_healthcheck=120, **common)


def _exposure(ws: Settings) -> None:
    """Say who may call; refuse an open relay on a non-loopback host (docs/keys-and-limits.md)."""
    from app.keys import ExposureError, KeyStore, check_exposure

    try:
        line = check_exposure(ws, KeyStore.from_settings(ws))
    except ExposureError as exc:
        raise fail(str(exc)) from None
    console.print(f"[yellow]warning:[/yellow] {line}" if line.startswith("open") else line,
                  highlight=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings)")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Gateway processes (default from "
                                                "settings: 1)")] = None,
    train: Annotated[bool, typer.Option(help="Train the retriever if none exists")] = True,
) -> None:
    """Prepare the artifacts, then run the gateway in front of the configured upstream."""
    ws = settings(host=host, port=port, workers=workers)
    _exposure(ws)
    _prepare(ws, train=train)
    _run_gateway(ws, banner=first_request(ws.host, ws.port, model="MODEL") +
                 "\n  (MODEL: one of the upstream's models, GET /v1/models)")


@app.command()
def prepare(
    train: Annotated[bool, typer.Option(help="Train the retriever if none exists")] = True,
    progress_file: Annotated[Path | None, typer.Option(
        hidden=True, help="Write the stage and training progress here (the quick start's "
        "background training)")] = None,
) -> None:
    """Make the artifacts ready: the trained retriever (if missing), its backend export, index."""
    if progress_file is None:
        _prepare(settings(), train=train)
        return
    from guide.quickstart import background_prepare

    quiet_third_party()
    background_prepare(settings(), progress_file, log=console.print)


@app.command()
def up(
    llm_port: Annotated[int, typer.Option(help="Port of the local llama.cpp server")] = 8081,
    refine_port: Annotated[int, typer.Option(help="Port of the local refiner (started when "
                                             "refinement is on without REFINE_BASE_URL)")] = 8083,
    port: Annotated[int, typer.Option(help="Gateway port")] = 8000,
    train: Annotated[bool, typer.Option(help="Train the retriever on first start")] = True,
    workers: Annotated[int | None, typer.Option(min=1, help="Gateway processes")] = None,
    quick: Annotated[bool | None, typer.Option(
        "--quick/--full", help="Without a trained retriever: serve the base encoder at once "
        "and train in the background (--quick, the default), or train first (--full)")] = None,
) -> None:
    """Start the whole local system: llama.cpp + SmolLM2 upstream, then the gateway."""
    from app.launcher import (
        LaunchError,
        smollm2_path,
        start_llama_server,
        stop_process,
        wait_until_ready,
        warm_up,
    )

    upstream = f"http://127.0.0.1:{llm_port}/v1"
    # The gateway's upstream is the server started here; workers read it from the environment.
    os.environ["GUIDE_ALIGN_UPSTREAM_BASE_URL"] = upstream
    ws = settings(host="127.0.0.1", port=port, workers=workers, upstream_base_url=upstream)
    _exposure(ws)
    quick = _start_mode(ws, quick=quick, train=train)
    log_file = ws.var_dir / "llama-server.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # llama.cpp loads its model while the artifacts are prepared
    console.print(f"starting llama.cpp server on 127.0.0.1:{llm_port} (log: {log_file})",
                  highlight=False)
    try:
        proc = start_llama_server(smollm2_path(), port=llm_port, log_file=log_file)
    except LaunchError as exc:
        raise fail(str(exc)) from None
    refiner, ws = _start_refiner(ws, refine_port)
    try:
        served = quick_workspace(ws) if quick else ws
        _prepare(served, train=train, quick=quick)
        wait_until_ready(f"{upstream}/models", timeout=180, proc=proc)
        try:
            seconds = warm_up(upstream)
            console.print(f"llama.cpp answered a warm-up request in {seconds:.1f}s")
        except LaunchError as exc:  # the gateway still starts; /readyz tells the truth
            console.print(f"[yellow]warning:[/yellow] {exc}")
        if refiner is not None:
            _wait_for_refiner(refiner, ws)
        banner = first_request("127.0.0.1", port) + (
            "\n  GET /readyz says which artifacts serve; training log: "
            f"{ws.var_dir / 'prepare.log'}" if quick else "")
        _run_gateway(served, _quick_app(served, ws) if quick else None, banner=banner)
    finally:
        console.print("stopping llama.cpp server")
        stop_process(proc)
        if refiner is not None:
            stop_process(refiner)


def _start_refiner(ws: Settings, port: int) -> tuple[Any, Settings]:
    """The local refiner's llama.cpp server when `up` needs one (docs/refinement.md), and the
    settings with refine_base_url pointing at it."""
    from app.refiner import local_url, start_local_refiner

    log_file = ws.var_dir / "refiner-server.log"
    proc = start_local_refiner(ws, port=port, log_file=log_file)
    if proc is None:
        return None, ws
    os.environ["GUIDE_ALIGN_REFINE_BASE_URL"] = local_url(port)  # for the workers
    console.print(f"starting the refiner's llama.cpp server on 127.0.0.1:{port} "
                  f"(log: {log_file})", highlight=False)
    return proc, ws.model_copy(update={"refine_base_url": local_url(port)})


def _wait_for_refiner(proc: Any, ws: Settings) -> None:
    """Wait for the local refiner's first answer; the gateway starts either way (requests use
    the original prompt while the refiner does not answer)."""
    from app.launcher import LaunchError, wait_until_ready, warm_up

    url = str(ws.refine_base_url)
    try:
        wait_until_ready(f"{url}/models", timeout=120, proc=proc)
        seconds = warm_up(url, model=ws.refine_model, timeout=120)
        console.print(f"the refiner answered a warm-up request in {seconds:.1f}s")
    except LaunchError as exc:
        console.print(f"[yellow]warning:[/yellow] refiner: {exc}; requests keep their original "
                      "prompt until it answers", highlight=False)


def _start_mode(ws: Settings, *, quick: bool | None, train: bool) -> bool:
    """Whether `up` starts quick (base encoder now, trained artifacts in the background);
    says which mode and why."""
    from guide.quickstart import has_trained

    trained = has_trained(ws)
    if quick and not train:
        raise fail("--quick trains in the background; it cannot be combined with --no-train")
    if quick and ws.workers > 1:
        raise fail("--quick serves one gateway process (it swaps its artifacts in place); "
                   "use --full with --workers")
    if trained:
        console.print(f"mode: trained artifacts ({ws.trained_encoder_path})"
                      if ws.encoder_path is None else
                      f"mode: the encoder at {ws.encoder_path} (ENCODER_PATH)", highlight=False)
        return False
    if not train:
        console.print("mode: --no-train (serving only what is already prepared)")
        return False
    if quick is None:
        quick = ws.workers == 1
    if quick:
        console.print("mode: quick start. No trained retriever yet: the gateway answers with "
                      "the base encoder (all-MiniLM-L6-v2, untrained) in a few minutes, while "
                      "the full retriever and judge train in the background at low priority "
                      "(30 to 35 minutes on 2 cores); then it switches to them. "
                      "`guide-align up --full` waits for the training instead.", highlight=False)
    else:
        why = f" (--workers {ws.workers}: the quick start serves one process)" \
            if ws.workers > 1 else ""
        console.print(f"mode: full{why}. Training the retriever (20 to 25 minutes on 2 cores) "
                      "and the judge (about 10) before the gateway starts.", highlight=False)
    return quick


def _quick_app(served: Settings, trained: Settings) -> Any:
    """The gateway on the quick artifacts, training the full ones in the background."""
    from app.main import create_app
    from app.training import BackgroundTraining, with_background_training

    training = BackgroundTraining(trained, progress_file=trained.var_dir / "prepare.progress",
                                  log_file=trained.var_dir / "prepare.log")
    console.print(f"artifacts: base encoder now; full training in the background "
                  f"(log: {training.log_file})", highlight=False)
    return with_background_training(create_app(served), training)


def main() -> None:
    """Console entry point."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model loads from a local path
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    app()


if __name__ == "__main__":
    main()
