"""`guide-align retriever ...`: train, index, search."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from guideline_lib.io import default_library_path

app = typer.Typer(help="Retriever: train the bi-encoder, build the index, search.",
                  no_args_is_help=True)
console = Console(width=120)
VAR = Path("var")


@app.command()
def train(
    library: Annotated[Path, typer.Option(help="Library directory")] = default_library_path(),
    output: Annotated[Path, typer.Option("-o", "--output", help="Encoder directory")] = VAR
    / "encoder",
    base: Annotated[str, typer.Option(help="Base sentence-transformers model path")] = "",
    epochs: Annotated[float, typer.Option()] = 1.0,
    batch_size: Annotated[int, typer.Option()] = 64,
    hard_negatives: Annotated[int, typer.Option(help="Mined hard negatives per pair")] = 1,
    seed: Annotated[int, typer.Option()] = 13,
    max_pairs: Annotated[int, typer.Option(help="Cap on training pairs (0 = all)")] = 6000,
    max_seq_length: Annotated[int, typer.Option()] = 64,
) -> None:
    """Fine-tune the bi-encoder on the library's examples; prints held-out metrics."""
    from guideline_lib.io import load_library
    from retriever.train import TrainConfig, train_retriever

    config = TrainConfig(base_model=base, epochs=epochs, batch_size=batch_size,
                         hard_negatives=hard_negatives, seed=seed, max_pairs=max_pairs,
                         max_seq_length=max_seq_length)
    result = train_retriever(load_library(library), output, config=config)
    table = Table(title=f"held-out metrics ({result.counts['examples_test']} queries)")
    table.add_column("metric")
    table.add_column("zero-shot", justify="right")
    table.add_column("trained", justify="right")
    for key in result.after:
        table.add_row(key, f"{result.before.get(key, 0):.3f}", f"{result.after[key]:.3f}")
    console.print(table)
    console.print(f"saved {output} in {result.seconds:.0f}s ({result.counts})")


BACKEND_HELP = ("Encoder backend: torch | onnx | onnx-int8 | static (the gateway's default is "
                "onnx-int8; an index only serves the backend it was built with)")


@app.command()
def index(
    library: Annotated[Path, typer.Option(help="Library directory")] = default_library_path(),
    encoder: Annotated[Path | None, typer.Option(help="Encoder (default: trained, else base)")]
    = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Index directory")] = VAR
    / "index",
    kind: Annotated[str, typer.Option(help="flat | hnsw | ivfpq")] = "flat",
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "onnx-int8",
    ef_search: Annotated[int | None, typer.Option(help="HNSW: search breadth")] = None,
    ef_construction: Annotated[int | None, typer.Option(help="HNSW: build breadth")] = None,
    nprobe: Annotated[int | None, typer.Option(help="IVF: lists visited per query")] = None,
) -> None:
    """Embed the library and write a FAISS index with its manifest."""
    from guideline_lib.io import load_library
    from retriever.backends import BACKENDS, load_backend_encoder
    from retriever.index import IndexConfig, build_index, save_index
    from retriever.service import RetrieverPaths, backend_encoder, encoder_hash

    if backend not in BACKENDS:
        raise typer.BadParameter(f"--backend: one of {sorted(BACKENDS)}")
    if kind not in ("flat", "hnsw", "ivfpq"):
        raise typer.BadParameter("--kind: flat, hnsw or ivfpq")
    paths = RetrieverPaths(library=library, index=output, encoder=encoder,
                           trained_encoder=VAR / "encoder", exports=VAR / "encoders")
    default = IndexConfig()
    config = IndexConfig(kind=kind,  # type: ignore[arg-type]
                         hnsw_ef_search=ef_search or default.hnsw_ef_search,
                         hnsw_ef_construction=ef_construction or default.hnsw_ef_construction,
                         ivf_nprobe=nprobe or default.ivf_nprobe)
    enc_path = backend_encoder(paths, backend)
    lib = load_library(library)
    loaded = build_index(lib, load_backend_encoder(str(enc_path), backend),
                         encoder_path=str(enc_path), encoder_hash=encoder_hash(enc_path),
                         config=config)
    loaded.manifest["encoder_backend"] = backend
    save_index(loaded, output)
    console.print(f"indexed {len(loaded.ids)} guidelines with {enc_path} ({backend}) -> {output}")


@app.command()
def search(
    text: Annotated[str, typer.Argument(help="Query text")],
    k: Annotated[int, typer.Option()] = 6,
    min_score: Annotated[float, typer.Option()] = 0.0,
    library: Annotated[Path, typer.Option()] = default_library_path(),
    index: Annotated[Path, typer.Option()] = VAR / "index",
    encoder: Annotated[Path | None, typer.Option()] = None,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "onnx-int8",
) -> None:
    """Print the selected guidelines for a query as a table (the index is rebuilt if stale)."""
    from retriever.backends import BACKENDS
    from retriever.service import RetrieverPaths, open_retriever
    from retriever.types import SelectConfig

    if backend not in BACKENDS:
        raise typer.BadParameter(f"--backend: one of {sorted(BACKENDS)}")
    r = open_retriever(RetrieverPaths(library=library, index=index, encoder=encoder,
                                      trained_encoder=VAR / "encoder", exports=VAR / "encoders"),
                       config=SelectConfig(k=k, min_score=min_score), backend=backend)
    table = Table(title=text[:80])
    for col in ("#", "score", "kind", "category", "id", "text"):
        table.add_column(col)
    for n, h in enumerate(r.search(text), 1):
        table.add_row(str(n), f"{h.score:.3f}", h.kind, h.category, h.id, h.text)
    console.print(table)


@app.command("export-encoder")
def export_encoder_cmd(
    backend: Annotated[str, typer.Option(help="onnx | onnx-int8 | static | all")] = "all",
    encoder: Annotated[Path | None, typer.Option(help="Source sentence-transformers directory "
                                                 "(default: trained, else base)")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output directory (one "
                                                "backend only; default: var/encoders/...)")]
    = None,
    exports: Annotated[Path, typer.Option(help="Cache of exported encoders")] = VAR / "encoders",
) -> None:
    """Export fast encoder variants (ONNX, int8 ONNX, static) with manifests naming the source."""
    from retriever.backends import BACKENDS, derived_path, export_encoder, read_manifest
    from retriever.service import RetrieverPaths, resolve_encoder

    names = [n for n, b in BACKENDS.items() if b.export] if backend == "all" else [backend]
    if any(BACKENDS.get(n) is None or BACKENDS[n].export is None for n in names):
        raise typer.BadParameter(f"--backend: one of {[n for n, b in BACKENDS.items() if b.export]}"
                                 " or all")
    if output is not None and len(names) != 1:
        raise typer.BadParameter("--output needs a single --backend")
    source = resolve_encoder(RetrieverPaths(library=default_library_path(), index=VAR / "index",
                                            encoder=encoder, trained_encoder=VAR / "encoder"))
    table = Table(title=f"encoder exports of {source}")
    for col in ("backend", "directory", "MB", "encoder hash"):
        table.add_column(col)
    for name in names:
        out = export_encoder(source, name, output or derived_path(source, name, exports))
        mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
        table.add_row(name, str(out), f"{mb:.0f}", read_manifest(out)["encoder_hash"][:12])
    console.print(table)
