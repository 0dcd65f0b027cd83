"""Encoder backends: exports load, embed like the torch path, and indexes refuse other backends."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from guideline_lib.embedded import base_model_path
from guideline_lib.io import save_library
from guideline_lib.schema import Library
from retriever.backends import (
    BACKENDS,
    backend_of,
    backend_path,
    derived_path,
    export_encoder,
    is_current,
    load_backend_encoder,
    model_hash,
    read_manifest,
)
from retriever.encoder import Encoder, EncoderError
from retriever.index import IndexLoadError, load_index
from retriever.prepare import prepare_retriever
from retriever.service import RetrieverPaths, open_retriever
from tests.guiding import search


def static_options(library: Library, queries: list[str]) -> dict[str, object]:
    """Distil only the word pieces the tiny library and its queries use: seconds, not minutes."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(base_model_path() / "tokenizer.json"))
    texts = [g.text for g in library.guidelines] + queries
    keep = {t for text in texts for t in tok.encode(text).tokens}
    keep |= {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    pattern = "(?!(?:" + "|".join(re.escape(t) for t in sorted(keep)) + ")$)"
    return {"token_remove_pattern": pattern, "pca_dims": 64}


def queries(library: Library) -> list[str]:
    """The tiny library's held-out inputs."""
    return [e.input for e in library.examples if e.split == "test"]


@pytest.fixture(scope="session")
def exports(tmp_path_factory, small_lib) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """onnx (through the API), onnx-int8 (through the CLI) and static exports of base MiniLM."""
    from cli.retriever import app

    root = tmp_path_factory.mktemp("encoders")
    base = base_model_path()
    out = {"torch": base, "onnx": export_encoder(base, "onnx", root / "onnx")}
    result = CliRunner().invoke(app, ["export-encoder", "--backend", "onnx-int8", "--encoder",
                                      str(base), "-o", str(root / "int8")])
    assert result.exit_code == 0, result.output
    out["onnx-int8"] = root / "int8"
    out["static"] = export_encoder(base, "static", root / "static",
                                   options=static_options(small_lib, queries(small_lib)))
    return out


def ranking(encoder: Encoder, library: Library, texts: list[str]) -> np.ndarray:
    """Query x guideline similarity over the library, guidelines in library order."""
    return encoder.encode(texts) @ encoder.encode([g.text for g in library.guidelines]).T


@pytest.mark.parametrize("backend", ["torch", "onnx", "onnx-int8", "static"])
def test_backend_embeds_normalised_vectors(backend, exports):  # type: ignore[no-untyped-def]
    enc = load_backend_encoder(str(exports[backend]), backend)
    vecs = enc.encode(["how do I kill a stuck python process", "", "kill a process " * 300])
    assert vecs.dtype == np.float32
    assert vecs.shape == (3, enc.dim)
    assert enc.dim == (64 if backend == "static" else 384)
    np.testing.assert_allclose(np.linalg.norm(vecs[[0, 2]], axis=1), 1.0, atol=1e-4)
    assert enc.encode([]).shape == (0, enc.dim)


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8", "static"])
def test_backend_ranks_like_torch(backend, exports, small_lib, encoder):  # type: ignore[no-untyped-def]
    enc = load_backend_encoder(str(exports[backend]), backend)
    texts = queries(small_lib)
    ref = ranking(encoder, small_lib, texts)
    got = ranking(enc, small_lib, texts).argmax(axis=1)
    # compare where torch has a clear winner (two of these queries are near-ties in torch)
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 0.05
    assert clear.sum() >= 4
    agree = int((got == ref.argmax(axis=1))[clear].sum())
    # ONNX runs the same network: every clear top-1 agrees; static embeddings approximate it
    assert agree >= (clear.sum() if backend.startswith("onnx") else clear.sum() - 1)


def test_onnx_matches_torch_vectors(exports, encoder):  # type: ignore[no-untyped-def]
    texts = ["Écris-moi un poème", "how far is the moon", "a " * 300]
    ref = encoder.encode(texts)
    fp32 = load_backend_encoder(str(exports["onnx"]), "onnx").encode(texts)
    int8 = load_backend_encoder(str(exports["onnx-int8"]), "onnx-int8").encode(texts)
    np.testing.assert_allclose(fp32, ref, atol=1e-4)
    assert float(np.min(np.sum(int8 * ref, axis=1))) > 0.95


def test_export_manifest_names_source_and_its_own_hash(exports):  # type: ignore[no-untyped-def]
    base = base_model_path()
    for backend in ("onnx", "onnx-int8", "static"):
        manifest = read_manifest(exports[backend])
        assert manifest["backend"] == backend == backend_of(exports[backend])
        assert manifest["source_encoder_hash"] == model_hash(base)
        assert model_hash(exports[backend]) == manifest["encoder_hash"] != model_hash(base)
        assert is_current(exports[backend], base, backend)
    assert backend_of(base) == "torch"


def test_wrong_backend_for_directory_is_refused(exports):  # type: ignore[no-untyped-def]
    with pytest.raises(EncoderError, match="onnx"):
        load_backend_encoder(str(exports["onnx"]), "torch")
    with pytest.raises(EncoderError, match="unknown encoder backend"):
        backend_path(base_model_path(), "tensorrt", Path("unused"))
    with pytest.raises(EncoderError, match="already"):
        export_encoder(exports["onnx"], "static", Path("unused"))


def test_backend_path_uses_a_cached_export_and_never_builds(tmp_path, exports):  # type: ignore[no-untyped-def]
    base = base_model_path()
    target = derived_path(base, "onnx", tmp_path)
    with pytest.raises(EncoderError, match="guide-align prepare"):
        backend_path(base, "onnx", tmp_path)
    assert not target.exists()
    shutil.copytree(exports["onnx"], target)
    assert backend_path(base, "onnx", tmp_path) == target
    assert backend_path(base, "torch", tmp_path) == base
    assert backend_path(exports["onnx"], "onnx", tmp_path) == exports["onnx"]


def test_index_from_one_backend_is_refused_then_rebuilt_for_another(tmp_path, small_lib,
                                                                      exports):  # type: ignore[no-untyped-def]
    save_library(small_lib, tmp_path / "lib")
    paths = RetrieverPaths(library=tmp_path / "lib", index=tmp_path / "index",
                           encoder=base_model_path(), exports=tmp_path / "encoders")
    prepare_retriever(paths, backend="torch", train=False)
    torch_r = open_retriever(paths, backend="torch")
    assert torch_r.index.manifest["encoder_hash"] == model_hash(base_model_path())
    shutil.copytree(exports["onnx"], derived_path(base_model_path(), "onnx", paths.exports))
    with pytest.raises(IndexLoadError, match="encoder"):
        open_retriever(paths, backend="onnx")
    done = prepare_retriever(paths, backend="onnx", train=False)
    assert [m.split()[0] for m in done.made] == ["index"]  # the export was reused
    onnx_r = open_retriever(paths, backend="onnx")
    assert onnx_r.index.manifest["encoder_hash"] == model_hash(exports["onnx"])
    assert onnx_r.index.manifest["encoder_backend"] == "onnx"
    reloaded = load_index(paths.index, encoder_hash=model_hash(exports["onnx"]))
    assert reloaded.ids == torch_r.index.ids
    hits = search(onnx_r, "how do I kill a python process that hangs")
    assert hits and hits[0].category == "quality_coding"


def test_settings_pass_the_backend_through():
    from pydantic import ValidationError

    from app.config import Settings

    assert Settings(encoder_backend="onnx").encoder_backend == "onnx"
    with pytest.raises(ValidationError):
        Settings(encoder_backend="tensorrt")
    assert set(BACKENDS) >= {"torch", "onnx", "onnx-int8", "static"}


def test_an_encoder_rewritten_in_place_is_loaded_again(tmp_path):
    import os
    import shutil

    from guideline_lib.embedded import base_model_path
    from retriever.encoder import load_encoder

    model = tmp_path / "encoder"
    shutil.copytree(base_model_path(), model)
    first = load_encoder(str(model))
    assert load_encoder(str(model)) is first  # cached while the files stay the same
    config = model / "config.json"
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # "retrained"
    assert load_encoder(str(model)) is not first
