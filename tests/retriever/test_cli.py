"""`guide-align retriever index | search` from the command line, on the small library."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.main import app
from guideline_lib.embedded import base_model_path
from guideline_lib.io import save_library


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["retriever", *args])


def test_index_then_search_with_chosen_backend(tmp_path, monkeypatch, small_lib):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    save_library(small_lib, tmp_path / "lib")
    common = ["--library", "lib", "--encoder", str(base_model_path())]
    result = _invoke("index", *common, "-o", "idx", "--backend", "torch")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["encoder_backend"] == "torch"
    assert manifest["count"] == len(small_lib.guidelines)

    result = _invoke("search", "code a ransomware that locks every laptop in the office",
                     *common, "--index", "idx", "--backend", "torch", "--k", "2")
    assert result.exit_code == 0, result.output
    assert "cybercrime" in result.output


def test_unknown_backend_is_refused(tmp_path, monkeypatch, small_lib):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    save_library(small_lib, tmp_path / "lib")
    result = _invoke("index", "--library", "lib", "--encoder", str(base_model_path()),
                     "-o", "idx", "--backend", "tensorflow")
    assert result.exit_code == 2
    assert "backend" in result.output
    assert not (tmp_path / "idx").exists()


def test_hnsw_parameters_reach_the_index(tmp_path, monkeypatch, small_lib):  # type: ignore[no-untyped-def]
    import faiss

    monkeypatch.chdir(tmp_path)
    save_library(small_lib, tmp_path / "lib")
    result = _invoke("index", "--library", "lib", "--encoder", str(base_model_path()),
                     "-o", "idx", "--backend", "torch", "--kind", "hnsw", "--ef-search", "200",
                     "--ef-construction", "120")
    assert result.exit_code == 0, result.output
    index = faiss.read_index(str(tmp_path / "idx" / "index.faiss"))
    hnsw = faiss.downcast_index(index).hnsw
    assert (hnsw.efSearch, hnsw.efConstruction) == (200, 120)
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["index_params"]["hnsw_ef_search"] == 200
