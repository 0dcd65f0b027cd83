"""Gateway settings: the workspace (artifacts, encoder backend, guidance policy) plus the
upstream, limits and server. Built once by the app factory or the command line."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from guide.workspace import Workspace


class Settings(Workspace):
    """Everything the gateway can be told; one setting away from any upstream or encoder."""

    # upstream LLM (any OpenAI-compatible server)
    upstream_base_url: str = "http://127.0.0.1:8081/v1"
    upstream_api_key: SecretStr | None = None
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(120.0, gt=0)
    write_timeout: float = Field(30.0, gt=0)
    pool_timeout: float = Field(10.0, gt=0)
    max_connections: int = Field(256, ge=1)
    ready_timeout: float = Field(2.0, gt=0)
    max_batch: int = Field(64, ge=1)  # conversations guided in one encoder call

    # request limits
    max_body_bytes: int = Field(1_048_576, ge=1024)

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

    @field_validator("upstream_api_key")
    @classmethod
    def _refuse_placeholder(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().strip():
            return None  # an empty variable (compose default) means no key
        placeholders = {"changeme", "change-me", "xxx"}
        if v is not None and v.get_secret_value().strip().lower() in placeholders:
            raise ValueError("upstream_api_key is a placeholder; set a real key or leave it unset")
        return v
