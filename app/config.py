"""Gateway settings: the workspace (artifacts, encoder backend, guidance policy) plus the
upstream, limits and server. Built once by the app factory or the command line."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from guide.backtrack import DEFAULT_MARKER, Marker
from guide.forgery import PROCESS_KEY
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
    # longest silence: before the answer (a CPU model on a long prompt), between chunks
    read_timeout: float = Field(120.0, gt=0)
    write_timeout: float = Field(30.0, gt=0)
    pool_timeout: float = Field(10.0, gt=0)
    # the whole upstream call: a non-streaming answer (504 past it) or a whole stream (an SSE
    # error event past it); docs/faults.md
    total_timeout: float = Field(300.0, gt=0)
    max_connections: int = Field(256, ge=1)
    max_keepalive_connections: int = Field(64, ge=0)
    keepalive_expiry: float = Field(5.0, ge=0)  # idle pooled connections are closed after it
    # caps on what the upstream sends back: a JSON answer (502 past it), a relayed stream
    max_upstream_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_stream_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    ready_timeout: float = Field(2.0, gt=0)
    max_batch: int = Field(64, ge=1)  # conversations guided in one encoder call

    # request limits (docs/api.md): each is a 4xx in the OpenAI error shape
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_json_depth: int = Field(64, ge=4, le=200)  # orjson cannot forward beyond 254 levels
    max_messages: int = Field(512, ge=1)  # messages per conversation, texts per moderation
    max_input_chars: int = Field(500_000, ge=1)  # characters of message text per request
    max_n: int = Field(8, ge=1)  # choices per chat request
    max_output_tokens: int = Field(32_768, ge=1)  # max_tokens / max_completion_tokens
    # browser access: origins allowed by CORS (none: no CORS headers, browsers block other
    # origins); GUIDE_ALIGN_CORS_ORIGINS=https://app.example,https://admin.example (or JSON)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_allow_credentials: bool = False
    # /docs, /redoc and /openapi.json (the schema stays available in-process: app.openapi())
    expose_docs: bool = False

    # server
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Gateway processes sharing the port (uvicorn workers); each loads its own retriever.
    workers: int = Field(1, ge=1, le=64)
    log_level: str = "info"
    # server-side time limits (docs/faults.md): a connection must send its request headers within
    # header_timeout, an idle keep-alive connection closes after keep_alive_timeout, and a whole
    # request (body, answer, stream) is cut at request_timeout
    header_timeout: float = Field(10.0, gt=0)
    keep_alive_timeout: int = Field(5, ge=1)
    request_timeout: float = Field(600.0, gt=0)
    # open connections plus running requests before the server answers 503; unset, no cap
    max_server_connections: int | None = Field(None, ge=1)
    graceful_shutdown_timeout: int = Field(30, ge=0)

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
    # per-caller limits (docs/keys-and-limits.md): a key's own values override these; 0 is
    # unlimited for rpm / tpm. Concurrency is per key, or per client address without keys.
    rpm: int = Field(0, ge=0)
    tpm: int = Field(0, ge=0)
    max_concurrency: int = Field(64, ge=1)
    queue_timeout: float = Field(5.0, ge=0)  # seconds a request waits for a concurrency slot
    keys_cache_ttl: float = Field(5.0, ge=0)  # seconds a key lookup is cached (revocation lag)

    # observability (docs/operations.md): log lines as JSON objects or text; the latest user
    # turn goes into the access log only with log_prompts; /metrics behind the admin key only
    # with metrics_require_admin; tracing over OTLP/HTTP when otlp_endpoint is set
    log_format: Literal["json", "text"] = "json"
    log_prompts: bool = False
    metrics_require_admin: bool = False
    otlp_endpoint: str | None = None

    # hot reload (docs/console.md): reload when the library directory changes; what a reload
    # may retrain (off: only the index and encoder exports are rebuilt for a new library);
    # seconds a replaced generation waits for its requests in flight before it is stopped
    watch_library: bool = False
    watch_debounce: float = Field(2.0, ge=0.0)
    reload_train: bool = False
    reload_grace: float = Field(300.0, ge=0.0)

    # stream backtracking (docs/backtracking.md): the judge's stream critic is the critic. Off by
    # default until it is good enough: bench/backtrack.py measures it retracting 35 % of its
    # scripted benign streams (2 of 16 real SmolLM2 answers) while 10 % of its unsafe ones leak.
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
    # a guard model for a second opinion (app/guard.py, docs/backtracking.md): an
    # OpenAI-compatible endpoint asked about every critic verdict at or above
    # backtrack_guard_from; its word decides. Unset: the critic alone decides
    backtrack_guard_url: str | None = None
    backtrack_guard_model: str = "llama-guard"
    backtrack_guard_api_key: SecretStr | None = None
    backtrack_guard_format: Literal["llama-guard", "prompted"] = "llama-guard"
    backtrack_guard_from: float = Field(0.2, ge=0.0, le=1.0)
    backtrack_guard_timeout: float = Field(10.0, gt=0)  # the whole call; past it, the critic's

    # the key of the guideline block's markers (guide/forgery.py): replicas that share it sign
    # a conversation's block alike; unset, each process draws its own
    guide_secret: SecretStr | None = None

    # query refinement (docs/refinement.md): off < retrieve < auto < rewrite. The refiner is any
    # OpenAI-compatible endpoint; unset, the local one `guide-align up` starts on the refiner
    # model under var_dir (refiner/current.gguf), if there is one
    refine: Literal["off", "retrieve", "auto", "rewrite"] = "off"
    refine_base_url: str | None = None
    refine_model: str = "guide-align-refiner"
    refine_api_key: SecretStr | None = None
    refine_timeout: float = Field(5.0, gt=0)  # the whole refiner call; past it, the original
    refine_max_tokens: int = Field(160, ge=1)
    refine_risk_threshold: float = Field(0.5, ge=0.0, le=1.0)  # auto: rewrite at or above it

    @field_validator("upstream_base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("upstream_base_url must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("refine_base_url", "backtrack_guard_url")
    @classmethod
    def _side_model_url(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None or not v.strip():
            return None  # an empty variable: the local refiner, or no guard
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{info.field_name} must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origin_list(cls, v: object) -> object:
        if isinstance(v, str):
            v = json.loads(v) if v.lstrip().startswith("[") else [
                o.strip() for o in v.split(",") if o.strip()]
        return v

    @field_validator("backtrack_marker")
    @classmethod
    def _valid_marker(cls, v: str) -> str:
        if v:
            Marker(v)  # raises on a template without text before one {n}
        return v

    def policy(self, judge: LinearHeads | None = None) -> Policy:
        """The workspace's guidance policy plus the deployment's backtracking defaults."""
        secret = self.guide_secret.get_secret_value().strip() if self.guide_secret else ""
        return dataclasses.replace(super().policy(judge), backtrack=self.backtrack,
                                   backtrack_window=self.backtrack_window,
                                   backtrack_max_retractions=self.backtrack_max_retractions,
                                   refine=self.refine,
                                   sign_key=secret.encode("utf-8") or PROCESS_KEY)

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

    @field_validator("master_key")
    @classmethod
    def _no_empty_master_key(cls, v: SecretStr | None) -> SecretStr | None:
        # `GUIDE_ALIGN_MASTER_KEY=` in an env file is no key, not an empty one that matches
        if v is not None and not v.get_secret_value().strip():
            return None
        if v is not None and v.get_secret_value().strip().lower() in {"changeme", "change-me"}:
            raise ValueError("master_key is a placeholder; set a long random key")
        return v
