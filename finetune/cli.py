"""`guide-align finetune ...`: generate, export, train, evaluate."""

from __future__ import annotations

import typer

app = typer.Typer(help="Labrador-style fine-tune stage.", no_args_is_help=True)
