"""The options every batch command shares to pick its engine: local (default) or Ray."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import fail

if TYPE_CHECKING:
    from scale.ray_engine import RayConfig

ENGINES = ("local", "ray")

EngineOpt = Annotated[str, typer.Option(help="local (this process) | ray (a Ray cluster; "
                                        "inputs may then be .jsonl/.parquet URLs)")]
RayAddressOpt = Annotated[str | None, typer.Option(
    envvar="RAY_ADDRESS", help="Ray cluster to join (default: start a local one)")]
WorkersOpt = Annotated[int, typer.Option(
    min=1, help="Ray: actors in the LLM client pool, each with --concurrency calls in flight")]
BatchSizeOpt = Annotated[int, typer.Option(min=1, help="Ray: inputs per batch and per shard")]


def check_engine(engine: str) -> str:
    """``engine`` if known, else a usage error."""
    if engine not in ENGINES:
        raise fail(f"--engine must be one of {', '.join(ENGINES)}")
    return engine


def ray_config(*, address: str | None, workers: int, batch_size: int,
               progress: bool) -> RayConfig:
    """The Ray settings of a command, or a clear error when Ray is not installed."""
    try:
        import ray  # noqa: F401

        from scale.ray_engine import RayConfig
    except ImportError as exc:
        raise fail(f"--engine ray needs the scale extra (pip install 'guide-align[scale]'): "
                   f"{exc}") from None
    return RayConfig(address=address, workers=workers, batch_size=batch_size,
                     show_progress=progress)
