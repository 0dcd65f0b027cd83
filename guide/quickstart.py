"""The quick first start: serve with the base encoder while the trained one is made.

The quick artifacts (the base encoder's export, its index of the library and a judge trained on
a fixed subsample of the judge data) live in their own directory, ``var_dir/quick`` by default,
so they never mix with the trained ones. Training the full retriever and judge (about half an
hour on two cores) then runs in the background; the gateway swaps to them when they are done.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from guideline_lib.embedded import base_model_path
from guideline_lib.io import MANIFEST, atomic_directory, load_library
from guideline_lib.schema import Library
from judge.data import SEEDS, answer_rows, load_families, prompt_rows
from judge.model import save_heads
from judge.prepare import judge_is_current, seeds_hash
from judge.train import MemoryRow, library_memory, train_heads
from retriever.backends import (
    derived_path,
    get_backend,
    is_current,
    load_backend_encoder,
    model_hash,
)
from retriever.prepare import Prepared, prepare_retriever, trained_encoder_is_current

Log = Callable[[str], None]
W = TypeVar("W", bound=Any)

QUICK_DIR = "quick"  # under var_dir
QUICK_SEQ_LENGTH = 64  # retriever.train.TrainConfig's max_seq_length
SBERT_CONFIG = "sentence_bert_config.json"


@dataclass(frozen=True)
class QuickJudgeConfig:
    """How much of the judge data the quick judge sees: every ``family_every``-th family (by
    id), every ``row_every``-th of its rows, and at most ``memory_rows`` of the library's train
    examples as the kNN memory. The defaults embed about 4,500 texts against the full judge's
    61,000 (test AUROC of the risk score: 0.80 on its own test rows, the full judge 0.79)."""

    family_every: int = 6
    row_every: int = 4
    memory_rows: int = 2500


def quick_workspace(ws: W, *, root: Path | None = None) -> W:
    """``ws`` with the base encoder and every artifact under ``root`` (``var_dir/quick``);
    everything else (the key store under ``var_dir`` included) stays as it is."""
    root = root or ws.var_dir / QUICK_DIR
    return ws.model_copy(update={
        "encoder_path": root / "base", "index_path": root / "index",
        "trained_encoder_path": root / "encoder", "exports_path": root / "encoders",
        "judge_path": root / "judge"})


def base_encoder(out: Path, *, max_seq_length: int = QUICK_SEQ_LENGTH) -> Path:
    """The installed base encoder at ``out``, reading at most ``max_seq_length`` tokens (the
    trained retriever's length: the base model's 256 embeds long texts several times slower):
    its files linked, its sentence-transformers config rewritten."""
    base = base_model_path()
    config = {**json.loads((base / SBERT_CONFIG).read_text("utf-8")),
              "max_seq_length": max_seq_length}
    try:
        if json.loads((out / SBERT_CONFIG).read_text("utf-8")) == config \
                and (out / "modules.json").resolve() == (base / "modules.json").resolve():
            return out
    except (OSError, ValueError):
        pass
    with atomic_directory(out) as tmp:
        for item in base.iterdir():
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            elif item.name != SBERT_CONFIG:
                (tmp / item.name).symlink_to(item.resolve())
        (tmp / SBERT_CONFIG).write_text(json.dumps(config), "utf-8")
    return out


def has_trained(ws: Any) -> bool:
    """True when the trained retriever for ``ws``'s library exists with its backend export
    and, when the workspace wants one, its judge (or the user named an encoder): then ``up``
    serves at once, with no quick start."""
    if ws.encoder_path is not None:
        return True
    library = load_library(ws.library_path)
    lib_hash = library.content_hash()
    source = ws.trained_encoder_path
    if not trained_encoder_is_current(source, lib_hash):
        return False
    if not ws.needs_judge():
        return True
    served = source
    if get_backend(ws.encoder_backend).export is not None:
        served = derived_path(source, ws.encoder_backend, ws.exports_path)
        if not is_current(served, source, ws.encoder_backend):
            return False
    return judge_is_current(ws.judge_path, model_hash(served), seeds_hash(),
                            library.manifest.content_hash or lib_hash)


def _every(rows: Sequence[Any], n: int) -> list[Any]:
    return list(rows[::max(1, n)])


def quick_judge_rows(library: Library | None, config: QuickJudgeConfig, *,
                     seeds: Path = SEEDS) -> tuple[list[Any], list[Any], list[MemoryRow]]:
    """The fixed subsample the quick judge trains on: prompts, answers, memory rows."""
    families = _every(sorted(load_families(seeds), key=lambda f: f.id), config.family_every)
    prompts = _every(prompt_rows(families), config.row_every)
    answers = _every(answer_rows(families), config.row_every)
    memory: list[MemoryRow] = []
    if library is not None:
        train = [m for m in library_memory(library) if m.split == "train"]
        n = min(len(train), config.memory_rows)
        memory = [train[i * len(train) // n] for i in range(n)]  # spread over the library
    return prompts, answers, memory


def _quick_config(path: Path) -> Any:
    try:
        return json.loads((path / MANIFEST).read_text("utf-8")).get("quick")
    except (OSError, ValueError):
        return None


def ensure_quick_judge(path: Path, encoder_dir: Path, backend: str, *, library: Path,
                       config: QuickJudgeConfig | None = None, seeds: Path = SEEDS,
                       log: Log = print) -> bool:
    """Train the quick judge for the encoder at ``encoder_dir`` into ``path`` unless a current
    one is there; True when it trained."""
    config = config or QuickJudgeConfig()
    lib = load_library(library)
    lib_hash = lib.manifest.content_hash or lib.content_hash()
    enc_hash, data = model_hash(encoder_dir), seeds_hash(seeds)
    if judge_is_current(path, enc_hash, data, lib_hash) and _quick_config(path) == asdict(config):
        return False
    prompts, answers, memory = quick_judge_rows(lib, config, seeds=seeds)
    log(f"training the quick judge on {len(prompts)} prompts, {len(answers)} answers and "
        f"{len(memory)} memory examples -> {path}")
    heads, metrics = train_heads(prompts, answers, load_backend_encoder(str(encoder_dir), backend),
                                 encoder_hash=enc_hash, memory=memory, progress=log)
    heads.manifest.update(seeds_hash=data, backend=backend, library_hash=lib_hash,
                          quick=asdict(config))
    save_heads(heads, path)
    risk = metrics.get("prompt_risk", {})
    log(f"quick judge trained in {heads.manifest['seconds']:.0f}s; test AUROC "
        f"{risk.get('auroc', float('nan')):.3f}")
    return True


def quick_prepare(ws: Any, *, config: QuickJudgeConfig | None = None, seeds: Path = SEEDS,
                  log: Log = print) -> Prepared:
    """Make the quick artifacts of ``ws`` (a ``quick_workspace``): the base encoder's backend
    export, its index and, when the workspace wants a judge, the quick judge."""
    base_encoder(ws.encoder_path)
    done = prepare_retriever(ws.retriever_paths(), backend=ws.encoder_backend, train=False,
                             log=log)
    if ws.needs_judge() and ensure_quick_judge(ws.judge_path, done.backend_encoder,
                                               ws.encoder_backend, library=ws.library_path,
                                               config=config, seeds=seeds, log=log):
        done.made.append(f"quick judge {ws.judge_path}")
    return done


# Progress of the background training, written by the child as one JSON object.


@dataclass(frozen=True)
class Progress:
    """Where the background training is: a stage name and the fraction of it done."""

    stage: str
    fraction: float | None = None
    done: bool = False
    error: str | None = None

    def describe(self) -> str:
        """``retriever 35%``, ``judge``, ``done`` or ``failed: ...``."""
        if self.error:
            return f"failed: {self.error}"
        if self.done:
            return "done"
        if self.fraction is None:
            return self.stage
        return f"{self.stage} {100 * self.fraction:.0f}%"


def write_progress(path: Path, progress: Progress) -> None:
    """Replace the progress file atomically (the gateway reads it at any moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(progress)), "utf-8")
    os.replace(tmp, path)


def read_progress(path: Path) -> Progress | None:
    """The last progress the child wrote (None when there is none yet)."""
    try:
        data = json.loads(path.read_text("utf-8"))
        return Progress(**data)
    except (OSError, ValueError, TypeError):
        return None


class ProgressWriter:
    """The child's side: turns prepare's log lines and the trainer's steps into progress."""

    def __init__(self, path: Path, *, log: Log = print, every: float = 1.0):
        self.path, self.log, self.every = path, log, every
        self.stage, self._last = "starting", 0.0
        write_progress(path, Progress(self.stage))

    def line(self, message: str) -> None:
        """A log line of prepare: names the current stage."""
        self.log(message)
        for key, stage in (("training the retriever", "retriever"), ("export", "export"),
                           ("building the index", "index"), ("judge", "judge")):
            if key in message:
                self.stage = stage
                break
        write_progress(self.path, Progress(self.stage))

    def step(self, done: int, total: int) -> None:
        """A training step of the retriever (written at most once every ``every`` seconds)."""
        now = time.monotonic()
        if now - self._last < self.every and done < total:
            return
        self._last = now
        write_progress(self.path, Progress("retriever", done / max(1, total)))

    def finish(self, error: str | None = None) -> None:
        write_progress(self.path, Progress(self.stage, done=error is None, error=error))


def step_callback(step: Callable[[int, int], None]) -> Any:
    """A transformers trainer callback that reports (steps done, steps in all) to ``step``."""
    from transformers import TrainerCallback

    class _Steps(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step(int(state.global_step), int(state.max_steps or 0))

    return _Steps()


def background_prepare(ws: Any, progress_file: Path, *, log: Log = print) -> Prepared:
    """`guide-align prepare` as the quick start's background child: the same artifacts, with
    its stage and the retriever's training steps written to ``progress_file``."""
    from retriever.prepare import ensure_trained_encoder

    writer = ProgressWriter(progress_file, log=log)
    try:
        if ws.encoder_path is None:
            ensure_trained_encoder(ws.library_path, ws.trained_encoder_path, log=writer.line,
                                   callbacks=[step_callback(writer.step)])
        done: Prepared = ws.prepare(train=True, log=writer.line)
    except BaseException as exc:
        writer.finish(f"{type(exc).__name__}: {exc}")
        raise
    writer.finish()
    return done
