"""Gateway settings: the workspace (artifacts, encoder backend, guidance policy) plus the
upstream, limits and server. Built once by the app factory or the command line."""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from guide.backtrack import DEFAULT_MARKER, Marker
from guide.options import BACKTRACK_WINDOW_MAX, Policy
from guide.workspace import Workspace
from judge.model import LinearHeads, load_heads
from retriever.search import DenseRetriever


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

    # operations (docs/operations.md): gateway keys, the admin API and console, shared limits
    # the admin key: `/admin/*` and `/console` need it as a bearer token; unset, they are off
    master_key: SecretStr | None = None
    # SQLAlchemy URL of the gateway-key store; "" means sqlite under var_dir (var/keys.sqlite)
    keys_db: str = ""
    # Redis URL for rate limits shared by several replicas; unset, limits are in-process
    redis_url: str | None = None
    # serve without any gateway key on a non-loopback host (an open relay): refused unless set
    allow_open: bool = False
    # a client's own Authorization is forwarded upstream only when this is set
    forward_client_auth: bool = False

    # stream backtracking (docs/backtracking.md): the response judge is the critic. Off by
    # default until the critic is good enough: bench/backtrack.py measures it retracting half of
    # its benign streams while a quarter of its unsafe ones still leak.
    backtrack: Literal["off", "monitor", "enforce"] = "off"
    # words held back from the client (chosen with bench/backtrack.py)
    backtrack_window: int = Field(16, ge=0, le=BACKTRACK_WINDOW_MAX)
    backtrack_every: int = Field(4, ge=1, le=100)  # judge after this many new words
    backtrack_threshold: float = Field(0.5, ge=0.0, le=1.0)  # P(unsafe) that retracts
    backtrack_max_retractions: int = Field(2, ge=0, le=10)
    backtrack_continuation: Literal["fold", "prefill"] = "fold"
    # the upstream's own marker (a model tuned with `finetune export --backtrack`); "" for none
    backtrack_marker: str = DEFAULT_MARKER
    # retracted text goes to the log (at INFO) only when this is set
    backtrack_log_retracted: bool = False

    @field_validator("upstream_base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("upstream_base_url must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("backtrack_marker")
    @classmethod
    def _valid_marker(cls, v: str) -> str:
        if v:
            Marker(v)  # raises on a template without text before one {n}
        return v

    def policy(self, judge: LinearHeads | None = None) -> Policy:
        """The workspace's guidance policy plus the deployment's backtracking defaults."""
        return dataclasses.replace(super().policy(judge), backtrack=self.backtrack,
                                   backtrack_window=self.backtrack_window,
                                   backtrack_max_retractions=self.backtrack_max_retractions)

    def needs_judge(self) -> bool:
        """The gate's judge, or the critic of backtracking: that one only for the trained
        default encoder (for an encoder the user named, `guide-align judge train` makes it);
        without a judge, backtracking reports itself unavailable."""
        return self.risk_gate or (self.backtrack != "off" and self.encoder_path is None)

    def open_critic(self, retriever: DenseRetriever) -> LinearHeads | None:
        """The response judge that backtracking uses (None when backtracking is off)."""
        if self.backtrack == "off":
            return None
        return load_heads(self.judge_path, encoder_hash=str(
            retriever.index.manifest.get("encoder_hash", "")))

    @field_validator("upstream_api_key")
    @classmethod
    def _refuse_placeholder(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().strip():
            return None  # an empty variable (compose default) means no key
        placeholders = {"changeme", "change-me", "xxx"}
        if v is not None and v.get_secret_value().strip().lower() in placeholders:
            raise ValueError("upstream_api_key is a placeholder; set a real key or leave it unset")
        return v
