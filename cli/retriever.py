"""`guide-align retriever ...`: train, index, search, export-encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import console, fail, settings

app = typer.Typer(help="Retriever: train the bi-encoder, build the index, search.",
                  no_args_is_help=True)
Opt = typer.Option

BACKEND_HELP = ("Encoder backend: torch | onnx | onnx-int8 | static (default: the workspace's, "
                "onnx-int8; an index only serves the backend it was built with)")


@app.command()
def train(
    library: Annotated[Path | None, Opt(help="Library directory (default: the workspace's)")]
    = None,
    output: Annotated[Path | None, Opt("-o", "--output", help="Encoder directory (default: "
                                       "the workspace's trained encoder, var/encoder)")] = None,
    base: Annotated[str, Opt(help="Base sentence-transformers model path")] = "",
    epochs: Annotated[float, Opt()] = 1.0,
    batch_size: Annotated[int, Opt()] = 64,
    hard_negatives: Annotated[int, Opt(help="Mined hard negatives per pair")] = 1,
    seed: Annotated[int, Opt()] = 13,
    max_pairs: Annotated[int, Opt(help="Cap on training pairs (0 = all)")] = 6000,
    max_seq_length: Annotated[int, Opt()] = 64,
) -> None:
    """Fine-tune the bi-encoder on the library's examples; prints held-out metrics."""
    from guideline_lib.io import load_library
    from retriever.train import TrainConfig, train_retriever

    ws = settings(library_path=library, trained_encoder_path=output)
    config = TrainConfig(base_model=base, epochs=epochs, batch_size=batch_size,
                         hard_negatives=hard_negatives, seed=seed, max_pairs=max_pairs,
                         max_seq_length=max_seq_length)
    result = train_retriever(load_library(ws.library_path), ws.trained_encoder_path,
                             config=config)
    table = Table(title=f"held-out metrics ({result.counts['examples_test']} queries)")
    table.add_column("metric")
    table.add_column("zero-shot", justify="right")
    table.add_column("trained", justify="right")
    for key in result.after:
        table.add_row(key, f"{result.before.get(key, 0):.3f}", f"{result.after[key]:.3f}")
    console.print(table)
    console.print(f"saved {ws.trained_encoder_path} in {result.seconds:.0f}s ({result.counts})")


@app.command()
def index(
    library: Annotated[Path | None, Opt(help="Library directory")] = None,
    encoder: Annotated[Path | None, Opt(help="Encoder (default: the trained one)")] = None,
    output: Annotated[Path | None, Opt("-o", "--output", help="Index directory")] = None,
    kind: Annotated[str, Opt(help="auto | flat | hnsw | ivfflat | ivfsq8 | ivfpq (auto: exact "
                                  "up to 20,000 guidelines, IVF-Flat above)")] = "flat",
    backend: Annotated[str | None, Opt(help=BACKEND_HELP)] = None,
    ef_search: Annotated[int | None, Opt(help="HNSW: search breadth")] = None,
    ef_construction: Annotated[int | None, Opt(help="HNSW: build breadth")] = None,
    nprobe: Annotated[int | None, Opt(help="IVF: lists visited per query")] = None,
    refine_k: Annotated[int, Opt(help="IVF-PQ: re-rank refine_k x k candidates on the full "
                                      "vectors (0: off)")] = 0,
    shards: Annotated[int, Opt(help="Index files split by row range (search merges them)")] = 1,
) -> None:
    """Embed the library and write a FAISS index with its manifest (rebuilt even if current)."""
    from retriever.encoder import EncoderError
    from retriever.index import IndexConfig
    from retriever.prepare import prepare_retriever

    kinds = ("auto", "flat", "hnsw", "ivfflat", "ivfsq8", "ivfpq")
    if kind not in kinds:
        raise typer.BadParameter(f"--kind: one of {', '.join(kinds)}")
    if refine_k < 0 or shards < 1:
        raise typer.BadParameter("--refine-k must be >= 0 and --shards >= 1")
    ws = settings(library_path=library, encoder_path=encoder, index_path=output,
                  encoder_backend=backend)
    default = IndexConfig()
    config = IndexConfig(kind=kind,  # type: ignore[arg-type]
                         hnsw_ef_search=ef_search or default.hnsw_ef_search,
                         hnsw_ef_construction=ef_construction or default.hnsw_ef_construction,
                         ivf_nprobe=nprobe or default.ivf_nprobe, refine_k=refine_k,
                         shards=shards)
    try:
        done = prepare_retriever(ws.retriever_paths(), backend=ws.encoder_backend, train=False,
                                 index_config=config, rebuild_index=True, log=console.print)
    except EncoderError as exc:
        raise fail(str(exc)) from None
    console.print(f"indexed with {done.backend_encoder} ({ws.encoder_backend}) -> "
                  f"{ws.index_path}")


@app.command()
def search(
    text: Annotated[str, typer.Argument(help="Query text (one user turn)")],
    k: Annotated[int | None, Opt(help="Guidelines (default: the workspace's)")] = None,
    min_score: Annotated[float | None, Opt(help="Minimum score (default: the workspace's)")]
    = None,
    safety_margin: Annotated[str | None, Opt(help="Safety-vs-quality margin, or 'off' "
                                             "(default: the workspace's)")] = None,
    library: Annotated[Path | None, Opt()] = None,
    index: Annotated[Path | None, Opt()] = None,
    encoder: Annotated[Path | None, Opt()] = None,
    backend: Annotated[str | None, Opt(help=BACKEND_HELP)] = None,
) -> None:
    """The guidelines a chat request with this one user turn would get, as a table."""
    from guide.step import guide
    from guideline_lib.io import LibraryError
    from judge.model import JudgeError
    from retriever.encoder import EncoderError
    from retriever.index import IndexLoadError

    explicit = {"safety_margin": parse_margin(safety_margin)} if safety_margin else {}
    ws = settings(library_path=library, index_path=index, encoder_path=encoder,
                  encoder_backend=backend, k=k, min_score=min_score, explicit=explicit)
    try:
        retriever = ws.open_retriever()
        judge = ws.open_judge(retriever)  # the gateway's risk gate, when it is on
    except (LibraryError, IndexLoadError, EncoderError, JudgeError) as exc:
        raise fail(str(exc)) from None
    table = Table(title=text[:80])
    for col in ("#", "score", "kind", "category", "id", "text"):
        table.add_column(col)
    for n, h in enumerate(guide(text, retriever, ws.policy(judge), judge=judge).hits, 1):
        table.add_row(str(n), f"{h.score:.3f}", h.kind, h.category, h.id, h.text)
    console.print(table)


def parse_margin(value: str) -> float | None:
    """A safety margin option: a number, or 'off' / 'none'."""
    if value.lower() in ("off", "none"):
        return None
    try:
        return float(value)
    except ValueError:
        raise fail("--safety-margin must be a number or 'off'") from None


@app.command("export-encoder")
def export_encoder_cmd(
    backend: Annotated[str, Opt(help="onnx | onnx-int8 | static | all")] = "all",
    encoder: Annotated[Path | None, Opt(help="Source sentence-transformers directory "
                                        "(default: the trained one)")] = None,
    output: Annotated[Path | None, Opt("-o", "--output", help="Output directory (one backend "
                                       "only; default: under the workspace's exports)")] = None,
) -> None:
    """Export fast encoder variants (ONNX, int8 ONNX, static) with manifests naming the source."""
    from retriever.backends import BACKENDS, derived_path, export_encoder, read_manifest
    from retriever.encoder import EncoderError
    from retriever.service import check_encoder

    names = [n for n, b in BACKENDS.items() if b.export] if backend == "all" else [backend]
    if any(BACKENDS.get(n) is None or BACKENDS[n].export is None for n in names):
        raise typer.BadParameter(f"--backend: one of {[n for n, b in BACKENDS.items() if b.export]}"
                                 " or all")
    if output is not None and len(names) != 1:
        raise typer.BadParameter("--output needs a single --backend")
    ws = settings(encoder_path=encoder)
    try:
        source = check_encoder(ws.retriever_paths().encoder)
    except EncoderError as exc:
        raise fail(str(exc)) from None
    table = Table(title=f"encoder exports of {source}")
    for col in ("backend", "directory", "MB", "encoder hash"):
        table.add_column(col)
    for name in names:
        out = export_encoder(source, name, output or derived_path(source, name, ws.exports_path))
        mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
        table.add_row(name, str(out), f"{mb:.0f}", read_manifest(out)["encoder_hash"][:12])
    console.print(table)
