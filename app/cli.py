"""The `guide-align` command: serve, up (whole local system), prepare, and the package groups."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from finetune.cli import app as finetune_app
from guideline_lib.build_cli import set_encoder_loader
from guideline_lib.cli import app as library_app
from retriever.cli import app as retriever_app


def _merge_encoder(path: Path | None) -> Any:
    """The sentence encoder `library build` merges near-duplicates with (default: MiniLM)."""
    from retriever.encoder import base_model_path, load_encoder

    return load_encoder(str(path or base_model_path()))


set_encoder_loader(_merge_encoder)  # guideline_lib may not import retriever: wired up here

app = typer.Typer(help="Guide-Align: guideline-retrieval alignment gateway for LLMs.",
                  no_args_is_help=True)
app.add_typer(library_app, name="library")
app.add_typer(retriever_app, name="retriever")
app.add_typer(finetune_app, name="finetune")


def _run_gateway(host: str | None, port: int | None, workers: int | None = None) -> None:
    import uvicorn

    from app.config import get_settings
    from app.main import create_app, load_retriever

    settings = get_settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    if workers:
        settings.workers = workers
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    common: dict[str, Any] = {"host": settings.host, "port": settings.port,
                              "log_level": settings.log_level, "loop": "auto", "http": "auto",
                              "access_log": False}
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **common)
        return
    # Several processes: build what is missing (index, encoder export) once, here, so the
    # workers only load it; each worker builds its app from the same environment (the
    # command-line overrides are host, port and workers, which only this process uses).
    load_retriever(settings)
    uvicorn.run("app.main:create_app", factory=True, workers=settings.workers, **common)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings)")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Gateway processes (default from "
                                                "settings: 1)")] = None,
) -> None:
    """Run the gateway in front of the configured upstream."""
    _run_gateway(host, port, workers)


@app.command()
def prepare(
    train: Annotated[bool, typer.Option(help="Train the retriever if none exists")] = True,
) -> None:
    """Make the default artifacts ready: trained retriever (if missing) and index."""
    from app.config import get_settings
    from app.main import load_retriever, retriever_paths
    from retriever.prepare import ensure_encoder_backend, ensure_trained_encoder

    settings = get_settings()
    if train and settings.encoder_path is None:
        ensure_trained_encoder(settings.library_path, settings.trained_encoder_path)
    ensure_encoder_backend(retriever_paths(settings), settings.encoder_backend)
    retriever = load_retriever(settings)
    typer.echo(f"retriever ready: {retriever.size} guidelines indexed at {settings.index_path}")


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

    os.environ.setdefault("GUIDE_ALIGN_UPSTREAM_BASE_URL", f"http://127.0.0.1:{llm_port}/v1")
    prepare(train=train)
    log_file = Path(os.environ.get("GUIDE_ALIGN_VAR_DIR", "var")) / "llama-server.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    typer.echo(f"starting llama.cpp server on 127.0.0.1:{llm_port} (log: {log_file})")
    proc = start_llama_server(smollm2_path(), port=llm_port, log_file=log_file)
    try:
        wait_until_ready(f"http://127.0.0.1:{llm_port}/v1/models", timeout=180, proc=proc)
        try:
            seconds = warm_up(f"http://127.0.0.1:{llm_port}/v1")
            typer.echo(f"llama.cpp answered a warm-up request in {seconds:.1f}s")
        except LaunchError as exc:  # the gateway still starts; /readyz tells the truth
            typer.echo(f"warning: {exc}", err=True)
        typer.echo(_banner(port))
        _run_gateway("127.0.0.1", port, workers)
    finally:
        typer.echo("stopping llama.cpp server")
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
    app()
if __name__ == "__main__":
    main()
