"""What every command shares: the console, errors, and the workspace read once per command."""

from __future__ import annotations

import os
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from app.config import Settings

console = Console(width=120, soft_wrap=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print an error and return the exit to raise."""
    console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def settings(*, explicit: dict[str, Any] | None = None, **overrides: Any) -> Settings:
    """The workspace and gateway settings: ``overrides`` (options given on the command line;
    None means not given) and ``explicit`` values (None included), then ``GUIDE_ALIGN_*``
    variables, then the TOML file named by ``GUIDE_ALIGN_CONFIG``."""
    given = {k: v for k, v in overrides.items() if v is not None} | (explicit or {})
    try:
        return Settings.load(os.environ.get("GUIDE_ALIGN_CONFIG") or None, **given)
    except ValueError as exc:
        raise fail(f"bad settings: {exc}") from None
