"""`guide-align library ...`: validate, stats, diff, merge, starter (and build)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from guideline_lib.build_cli import build
from guideline_lib.io import LibraryError, default_library_path, load_library, save_library
from guideline_lib.schema import Library
from guideline_lib.starter import SOURCES, assemble_starter
from guideline_lib.validate import diff_libraries, library_stats, merge_libraries, validate_library

app = typer.Typer(help="Guideline library tools.", no_args_is_help=True)
console = Console(width=120)

LibArg = Annotated[Path, typer.Argument(help="Library directory")]


def _load(path: Path) -> Library:
    try:
        return load_library(path)
    except LibraryError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def validate(
    library: Annotated[Path, typer.Argument(help="Library directory")] = default_library_path(),
    threshold: Annotated[float, typer.Option(help="Near-duplicate similarity threshold")] = 0.85,
) -> None:
    """Report unknown categories, dangling ids, bad texts and near-duplicate guidelines."""
    report = validate_library(_load(library), dup_threshold=threshold)
    for f in report.findings:
        colour = "red" if f.level == "error" else "yellow"
        console.print(f"[{colour}]{f.level}[/{colour}] {f.code}: {f.message}")
    n_err, n_warn = len(report.errors), len(report.findings) - len(report.errors)
    console.print(f"{library}: {n_err} errors, {n_warn} warnings")
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def stats(
    library: Annotated[Path, typer.Argument(help="Library directory")] = default_library_path(),
) -> None:
    """Counts per category and kind, as a table."""
    lib = _load(library)
    rows = library_stats(lib)
    table = Table(title=f"{lib.manifest.name} {lib.manifest.version} "
                        f"({lib.manifest.content_hash[:12]})")
    for col in ("category", "kind", "guidelines", "examples_train", "examples_test"):
        table.add_column(col, justify="left" if col in ("category", "kind") else "right")
    for r in rows:
        table.add_row(*(str(r[c]) for c in ("category", "kind", "guidelines", "examples_train",
                                              "examples_test")))
    c = lib.counts()
    table.add_section()
    table.add_row("total", f"{c['safety']} safety / {c['quality']} quality", str(c["guidelines"]),
                  str(c["examples_train"]), str(c["examples_test"]))
    console.print(table)


@app.command()
def diff(old: LibArg, new: LibArg) -> None:
    """Guidelines added, removed and changed between two library versions."""
    d = diff_libraries(_load(old), _load(new))
    for g in d.added:
        console.print(f"[green]+ {g.id}[/green] [{g.category}] {g.text}")
    for g in d.removed:
        console.print(f"[red]- {g.id}[/red] [{g.category}] {g.text}")
    for a, b in d.changed:
        console.print(f"[yellow]~ {a.id}[/yellow] {a.category}->{b.category} {a.kind}->{b.kind}")
    console.print(f"{len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed")


@app.command()
def merge(
    libraries: Annotated[list[Path], typer.Argument(help="Libraries; the first one wins ties")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output library directory")],
    name: Annotated[str | None, typer.Option(help="Name of the merged library")] = None,
) -> None:
    """Merge libraries (guidelines by id, examples de-duplicated) into a new one."""
    loaded = [_load(p) for p in libraries]
    merged = save_library(merge_libraries(loaded[0], *loaded[1:], name=name), output)
    console.print(f"wrote {output}: {merged.manifest.counts}")


@app.command()
def starter(
    sources: Annotated[Path, typer.Option(help="Per-category source files")] = SOURCES,
    output: Annotated[Path, typer.Option("-o", "--output")] = default_library_path(),
    version: Annotated[str, typer.Option(help="Library version")] = "1.0.0",
) -> None:
    """Assemble the starter library from its hand-written sources."""
    lib = save_library(assemble_starter(sources, version=version), output)
    console.print(f"wrote {output}: {lib.manifest.counts}")


app.command(name="build")(build)
