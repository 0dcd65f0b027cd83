"""Gateway settings: environment (GUIDE_ALIGN_*) and an optional TOML config file."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from guideline_lib.io import default_library_path

VAR_DIR = Path(os.environ.get("GUIDE_ALIGN_VAR_DIR", "var"))


class Settings(BaseSettings):
    """Everything the gateway can be told; one setting away from any upstream or encoder."""

    model_config = SettingsConfigDict(env_prefix="GUIDE_ALIGN_", extra="ignore")

    # upstream LLM (any OpenAI-compatible server)
    upstream_base_url: str = "http://127.0.0.1:8081/v1"
    upstream_api_key: SecretStr | None = None
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(120.0, gt=0)
    write_timeout: float = Field(30.0, gt=0)
    pool_timeout: float = Field(10.0, gt=0)
    max_connections: int = Field(256, ge=1)
    ready_timeout: float = Field(2.0, gt=0)

    # retrieval and selection
    k: int = Field(6, ge=0, le=50)
    # defaults chosen on the DEV halves of bench/retrieval_quality.py (trained retriever)
    min_score: float = Field(0.4, ge=-1.0, le=1.0)
    dedup_threshold: float = Field(0.5, ge=0.0, le=1.0)
    candidates: int = Field(24, ge=1, le=500)
    window: int = Field(3, ge=0, le=50)
    # keep safety guidelines only when the best safety candidate beats the best quality one by
    # this margin (None disables); tuned with bench/retrieval_quality.py
    safety_margin: float | None = Field(0.05, ge=-1.0, le=1.0)
    max_batch: int = Field(64, ge=1)

    # request limits
    max_body_bytes: int = Field(1_048_576, ge=1024)

    # artifacts
    library_path: Path = Field(default_factory=default_library_path)
    index_path: Path = VAR_DIR / "index"
    encoder_path: Path | None = None
    trained_encoder_path: Path = VAR_DIR / "encoder"
    # torch (reference) | onnx | onnx-int8 | static; derived ones are exported to VAR_DIR/encoders
    # (`guide-align prepare`). onnx-int8: ~5x faster per query than torch, -0.4 pt recall@6
    # held out (bench/retrieval_latency.py); set "torch" for the reference path.
    encoder_backend: str = "onnx-int8"
    build_missing_index: bool = True

    # server
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Gateway processes sharing the port (uvicorn workers); each loads its own retriever.
    workers: int = Field(1, ge=1, le=64)
    log_level: str = "info"

    @field_validator("upstream_base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("upstream_base_url must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("encoder_backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        from retriever.backends import BACKENDS

        if v not in BACKENDS:
            raise ValueError(f"encoder_backend must be one of {sorted(BACKENDS)}")
        return v

    @field_validator("upstream_api_key")
    @classmethod
    def _refuse_placeholder(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().strip():
            return None  # an empty variable (compose default) means no key
        placeholders = {"changeme", "change-me", "xxx"}
        if v is not None and v.get_secret_value().strip().lower() in placeholders:
            raise ValueError("upstream_api_key is a placeholder; set a real key or leave it unset")
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
        config_file = os.environ.get("GUIDE_ALIGN_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return (*sources, file_secret_settings)


@lru_cache
def get_settings() -> Settings:
    """The process settings, read once."""
    return Settings()
