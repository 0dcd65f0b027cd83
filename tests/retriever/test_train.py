"""Training on a small library improves the held-out metrics over the zero-shot encoder."""

from __future__ import annotations

import json

import pytest

from guideline_lib.io import default_library_path, load_library
from guideline_lib.schema import Library
from retriever.backends import MANIFEST
from retriever.train import TrainConfig, train_retriever, training_pairs

CATEGORIES = {"cybercrime", "privacy", "fraud_deception", "quality_coding"}


def subset(library: Library) -> Library:
    """Four neighbouring categories of the starter library: hard to tell apart zero-shot."""
    keep = {g.id for g in library.guidelines if g.category in CATEGORIES}
    return Library(
        manifest=library.manifest,
        guidelines=[g for g in library.guidelines if g.id in keep],
        examples=[e for e in library.examples if set(e.guideline_ids) <= keep],
    ).sealed()


def test_training_pairs_never_use_linked_guidelines_as_negatives(small_lib):
    anchors, positives, linked = training_pairs(small_lib)
    assert len(anchors) == len(positives) == sum(
        len(e.guideline_ids) for e in small_lib.examples if e.split == "train")
    for a, p in zip(anchors, positives, strict=True):
        assert p in linked[a]


def test_mined_negatives_linked_to_the_same_input_are_dropped(small_lib):
    from datasets import Dataset

    from retriever.train import drop_linked_negatives

    anchors, positives, linked = training_pairs(small_lib)
    a, p = anchors[0], positives[0]
    other_linked = next((g for g in linked[a] if g != p), p)
    unrelated = next(g.text for g in small_lib.guidelines if g.text not in linked[a])
    mined = Dataset.from_dict({"anchor": [a, a], "positive": [p, p],
                               "negative": [other_linked, unrelated]})
    kept = drop_linked_negatives(mined, linked)
    assert kept["negative"] == [unrelated]


@pytest.mark.slow
def test_training_improves_heldout_metrics(tmp_path):
    lib = subset(load_library(default_library_path()))
    out = tmp_path / "enc"
    result = train_retriever(
        lib, out, config=TrainConfig(max_pairs=384, batch_size=32, epochs=1.0,
                                     learning_rate=1e-4, seed=7),
        show_progress=False)
    assert result.after["mrr@10"] > result.before["mrr@10"]
    assert result.after["recall@6"] >= result.before["recall@6"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["library_hash"] == lib.content_hash()
    assert manifest["metrics_after"] == result.after
    assert manifest["counts"]["triplets"] > 0
    assert (out / "modules.json").exists()
    # the saved model loads and ranks with the manifest's recorded hash
    from retriever.backends import model_hash as encoder_hash

    assert encoder_hash(out) == manifest["encoder_hash"]
