"""The workspace: every artifact path, the encoder backend and the guidance policy, in one place.

Built once by the command line or the app factory (from ``GUIDE_ALIGN_*`` variables and an
optional TOML file) and passed down; nothing below them reads the environment or a hard-coded
directory.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from guide.options import Policy
from guideline_lib.io import default_library_path
from judge.model import LinearHeads, load_heads
from judge.prepare import ensure_judge
from retriever.backends import BACKENDS, DEFAULT_BACKEND, SOURCE_BACKEND
from retriever.encoder import set_torch_threads
from retriever.prepare import Prepared, prepare_retriever
from retriever.search import DenseRetriever
from retriever.service import RetrieverPaths, open_retriever
from retriever.types import SelectConfig

_DEFAULT_SELECT = SelectConfig()
# The TOML file of the settings being built (set by ``load``; a context variable because
# pydantic-settings asks for sources on the class, not the instance).
_toml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("toml", default=None)

# Artifact paths that default to a place under ``var_dir``.
_UNDER_VAR = {"index_path": "index", "trained_encoder_path": "encoder",
              "exports_path": "encoders", "judge_path": "judge"}


class Workspace(BaseSettings):
    """Where artifacts live, which encoder runtime serves, and the deployment's guidance policy."""

    model_config = SettingsConfigDict(env_prefix="GUIDE_ALIGN_", extra="ignore", frozen=True)

    # artifacts
    var_dir: Path = Path("var")
    library_path: Path = Field(default_factory=default_library_path)
    index_path: Path = Path("var/index")
    # None: the trained encoder at ``trained_encoder_path`` (made by `guide-align prepare`)
    encoder_path: Path | None = None
    trained_encoder_path: Path = Path("var/encoder")
    exports_path: Path = Path("var/encoders")  # derived encoders (onnx, int8, static)
    judge_path: Path = Path("var/judge")
    # torch (reference) | onnx | onnx-int8 | static. onnx-int8 is ~5x faster per query than
    # torch at -0.4 pt held-out recall@6 (bench/retrieval_latency.py).
    encoder_backend: str = DEFAULT_BACKEND
    torch_threads: int = Field(0, ge=0)  # 0: up to 4, bounded by the cores

    # guidance policy (defaults chosen on the DEV halves of bench/retrieval_quality.py)
    guidance: bool = True
    k: int = Field(_DEFAULT_SELECT.k, ge=0, le=50)
    min_score: float = Field(_DEFAULT_SELECT.min_score, ge=-1.0, le=1.0)
    # keep safety guidelines only when the best safety candidate beats the best quality one by
    # this margin (None: off)
    safety_margin: float | None = Field(_DEFAULT_SELECT.safety_margin, ge=-1.0, le=1.0)
    dedup_threshold: float = Field(_DEFAULT_SELECT.dedup_threshold, ge=0.0, le=1.0)
    candidates: int = Field(_DEFAULT_SELECT.candidates, ge=1, le=500)
    mmr: bool = _DEFAULT_SELECT.mmr
    window: int = Field(3, ge=0, le=50)
    # query views per conversation at most: long inputs are viewed as overlapping passages
    # (guide/views.py), each one an encoder row
    max_views: int = Field(48, ge=2, le=256)
    # The prompt-risk gate (judge/): on by default. prepare trains the judge, whose dev-chosen
    # threshold applies unless set here; at the margin rule's own over-triggering it finds more
    # harmful prompts (bench/judge_quality.py). /v1/moderations and /v1/judgements need it.
    risk_gate: bool = True
    risk_threshold: float | None = Field(None, ge=0.0, le=1.0)
    category_weight: float = Field(0.2, ge=0.0, le=1.0)
    # Per-request `guide_align` options may only tighten the policy unless this is set.
    allow_loosen: bool = False

    @model_validator(mode="before")
    @classmethod
    def _paths_under_var(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("var_dir") is not None:
            var = Path(data["var_dir"])
            for name, sub in _UNDER_VAR.items():
                if data.get(name) is None:
                    data = {**data, name: var / sub}
        return data

    @field_validator("safety_margin", "risk_threshold", mode="before")
    @classmethod
    def _off_is_none(cls, v: Any) -> Any:
        # "off" / "none" / "" switch the margin or the threshold off from env or TOML
        return None if isinstance(v, str) and v.strip().lower() in ("off", "none", "null", "") \
            else v

    @field_validator("encoder_backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v not in BACKENDS:
            raise ValueError(f"encoder_backend must be one of {sorted(BACKENDS)}")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _toml_file.get()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return (*sources, file_secret_settings)

    @classmethod
    def load(cls, config_file: Path | str | None = None, **overrides: Any) -> Self:
        """Settings from ``overrides``, then the environment, then ``config_file`` (TOML)."""
        if config_file is not None and not Path(config_file).is_file():
            raise ValueError(f"config file {config_file} does not exist")
        token = _toml_file.set(Path(config_file) if config_file else None)
        try:
            return cls(**overrides)
        finally:
            _toml_file.reset(token)

    def select_config(self) -> SelectConfig:
        """The deployment's selection rules."""
        return SelectConfig(k=self.k, min_score=self.min_score,
                            dedup_threshold=self.dedup_threshold, candidates=self.candidates,
                            safety_margin=self.safety_margin, mmr=self.mmr)

    def policy(self, judge: LinearHeads | None = None) -> Policy:
        """The deployment's guidance policy, before any request options (the risk gate needs
        the ``judge`` it will run with: its threshold is the default)."""
        threshold = None
        if self.risk_gate and judge is not None:
            threshold = self.risk_threshold if self.risk_threshold is not None \
                else judge.threshold
        return Policy(enabled=self.guidance, select=self.select_config(), window=self.window,
                      risk_threshold=threshold, category_weight=self.category_weight,
                      max_views=self.max_views)

    def retriever_paths(self) -> RetrieverPaths:
        """Where the retriever's library, encoder, exports and index live."""
        return RetrieverPaths(library=self.library_path, index=self.index_path,
                              encoder=self.encoder_path or self.trained_encoder_path,
                              exports=self.exports_path)

    def prepare(self, *, train: bool = True, log: Callable[[str], None] = print) -> Prepared:
        """Make the artifacts ready (train only the default encoder, never one the user named;
        with the risk gate on, the judge is trained whenever it is missing or stale for the
        serving encoder, the seed data or the library; ``train=False`` trains neither, and the
        gateway then runs without the gate until a judge exists); the one step that writes
        them."""
        done = prepare_retriever(self.retriever_paths(), backend=self.encoder_backend,
                                 train=train and self.encoder_path is None, log=log)
        if train and self.needs_judge() and ensure_judge(self.judge_path, done.backend_encoder,
                                           self.encoder_backend, library=self.library_path,
                                           log=log):
            done.made.append(f"judge {self.judge_path}")
        return done

    def needs_judge(self) -> bool:
        """Whether ``prepare`` trains the judge (when training is allowed): the risk gate's."""
        return self.risk_gate

    def open_judge(self, retriever: DenseRetriever) -> LinearHeads | None:
        """The prepared judge for ``retriever``'s encoder (None when the gate is off)."""
        if not self.risk_gate:
            return None
        return load_heads(self.judge_path, encoder_hash=str(
            retriever.index.manifest.get("encoder_hash", "")))

    def open_retriever(self) -> DenseRetriever:
        """The prepared retriever (read only; a missing artifact names `guide-align prepare`)."""
        if self.encoder_backend == SOURCE_BACKEND:
            set_torch_threads(self.torch_threads)
        return open_retriever(self.retriever_paths(), backend=self.encoder_backend)
