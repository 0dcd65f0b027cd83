"""The `guide-align` command: serve, up (the whole local system), prepare, and the groups."""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any

import typer

from app.config import Settings
from cli.common import console, fail, settings
from cli.evaluate import eval_command
from cli.finetune import app as finetune_app
from cli.judge import app as judge_app
from cli.library import app as library_app
from cli.retriever import app as retriever_app

app = typer.Typer(help="Guide-Align: guideline-retrieval alignment gateway for LLMs.",
                  no_args_is_help=True)
app.add_typer(library_app, name="library")
app.add_typer(retriever_app, name="retriever")
app.add_typer(judge_app, name="judge")
app.add_typer(finetune_app, name="finetune")
app.command(name="eval")(eval_command)


def _prepare(ws: Settings, *, train: bool) -> None:
    """Make the artifacts ready, saying what was made."""
    from guideline_lib.io import LibraryError
    from retriever.encoder import EncoderError

    try:
        done = ws.prepare(train=train, log=console.print)
    except (LibraryError, EncoderError) as exc:
        raise fail(str(exc)) from None
    for line in done.made:
        console.print(f"prepared {line}")
    console.print(f"retriever ready: encoder {done.backend_encoder} ({ws.encoder_backend}), "
                  f"index {done.index}")


def _run_gateway(ws: Settings) -> None:
    import uvicorn

    from app.main import create_app

    logging.basicConfig(level=ws.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    common: dict[str, Any] = {"host": ws.host, "port": ws.port, "log_level": ws.log_level,
                              "loop": "auto", "http": "auto", "access_log": False}
    if ws.workers == 1:
        uvicorn.run(create_app(ws), **common)
        return
    # Several processes: each worker builds its app from the environment (prepare has already
    # made the artifacts, so they only load them).
    uvicorn.run("app.main:create_app", factory=True, workers=ws.workers, **common)


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
    _prepare(ws, train=train)
    _run_gateway(ws)


@app.command()
def prepare(
    train: Annotated[bool, typer.Option(help="Train the retriever if none exists")] = True,
) -> None:
    """Make the artifacts ready: the trained retriever (if missing), its backend export, index."""
    _prepare(settings(), train=train)


@app.command()
def up(
    llm_port: Annotated[int, typer.Option(help="Port of the local llama.cpp server")] = 8081,
    port: Annotated[int, typer.Option(help="Gateway port")] = 8000,
    train: Annotated[bool, typer.Option(help="Train the retriever on first start")] = True,
    workers: Annotated[int | None, typer.Option(min=1, help="Gateway processes")] = None,
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
    _prepare(ws, train=train)
    log_file = ws.var_dir / "llama-server.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"starting llama.cpp server on 127.0.0.1:{llm_port} (log: {log_file})")
    try:
        proc = start_llama_server(smollm2_path(), port=llm_port, log_file=log_file)
    except LaunchError as exc:
        raise fail(str(exc)) from None
    try:
        wait_until_ready(f"{upstream}/models", timeout=180, proc=proc)
        try:
            seconds = warm_up(upstream)
            console.print(f"llama.cpp answered a warm-up request in {seconds:.1f}s")
        except LaunchError as exc:  # the gateway still starts; /readyz tells the truth
            console.print(f"[yellow]warning:[/yellow] {exc}")
        console.print(_banner(port), highlight=False)
        _run_gateway(ws)
    finally:
        console.print("stopping llama.cpp server")
        stop_process(proc)


def _banner(port: int) -> str:
    return (
        f"\nGateway on http://127.0.0.1:{port} (Ctrl-C stops both). Try:\n\n"
        f"  curl -si http://127.0.0.1:{port}/v1/chat/completions \\\n"
        "    -H 'content-type: application/json' \\\n"
        "    -d '{\"model\": \"smollm2-135m-instruct\", \"messages\": "
        "[{\"role\": \"user\", \"content\": \"How do I kill a stuck Python process?\"}], "
        "\"max_tokens\": 64}'\n"
    )


def main() -> None:
    """Console entry point."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model loads from a local path
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    app()


if __name__ == "__main__":
    main()
