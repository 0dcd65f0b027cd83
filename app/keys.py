"""Gateway keys: a hashed key store (SQLAlchemy), per-key policy, who is calling, and the
start-up exposure rule (no open relay on a non-loopback address)."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.engine.url import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from app.config import Settings
from app.errors import Forbidden
from guide.options import K_MAX, Applied, GuideOptions, Policy, apply_options

PREFIX = "ga-"
VISIBLE = 10  # characters of a key shown in listings ("ga-" and 7 more)

Backtrack = Literal["off", "monitor", "enforce"]
Refine = Literal["off", "retrieve", "auto", "rewrite"]


class UnknownKey(LookupError):
    """No such key, or an ambiguous prefix."""


class ExposureError(RuntimeError):
    """The gateway would be an open relay on a non-loopback address."""


@dataclass(frozen=True)
class KeyPolicy:
    """A key's own policy; None leaves the deployment's value. ``models`` empty allows all."""

    k: int | None = None
    risk_threshold: float | None = None
    backtrack: Backtrack | None = None
    # the refinement stage's mode (off < retrieve < auto < rewrite; app/refiner.py)
    refine: Refine | None = None
    models: tuple[str, ...] = ()
    allow_loosen: bool | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.k is not None and not 0 <= self.k <= K_MAX:
            raise ValueError(f"k must be between 0 and {K_MAX}")
        if self.risk_threshold is not None and not 0.0 <= self.risk_threshold <= 1.0:
            raise ValueError("risk_threshold must be between 0 and 1")
        for name in ("rpm", "tpm"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be 0 (unlimited) or more")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")

    def over(self, base: Policy) -> Policy:
        """The deployment policy ``base`` with this key's values in place (either way)."""
        options = GuideOptions(k=self.k, risk_threshold=self.risk_threshold,
                               backtrack=self.backtrack, refine=self.refine)
        return apply_options(base, options, allow_loosen=True).policy

    def allows(self, model: str | None) -> bool:
        """Whether this key may use upstream model ``model``."""
        return not self.models or (model is not None and model in self.models)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "models": list(self.models)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyPolicy:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("models") is not None:
            values["models"] = tuple(values["models"])
        else:
            values.pop("models", None)
        return cls(**values)


@dataclass(frozen=True)
class KeyRecord:
    """One stored key, never the key itself."""

    id: str
    prefix: str
    name: str
    created: datetime
    revoked: datetime | None
    policy: KeyPolicy

    @property
    def active(self) -> bool:
        return self.revoked is None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "object": "gateway.key", "prefix": self.prefix, "name": self.name,
                "created": self.created.isoformat(),
                "revoked": self.revoked.isoformat() if self.revoked else None,
                "policy": self.policy.as_dict()}


class _Base(DeclarativeBase):
    pass


class _Key(_Base):
    __tablename__ = "gateway_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    k: Mapped[int | None] = mapped_column(Integer, nullable=True)
    risk_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    backtrack: Mapped[str | None] = mapped_column(String(16), nullable=True)
    refine: Mapped[str | None] = mapped_column(String(16), nullable=True)
    models: Mapped[list[str]] = mapped_column(JSON, default=list)
    allow_loosen: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)

    def record(self) -> KeyRecord:
        created, revoked = _aware(self.created), self.revoked
        return KeyRecord(
            id=self.id, prefix=self.prefix, name=self.name, created=created,
            revoked=_aware(revoked) if revoked is not None else None,
            policy=KeyPolicy(k=self.k, risk_threshold=self.risk_threshold,
                             backtrack=self.backtrack,  # type: ignore[arg-type]
                             refine=self.refine,  # type: ignore[arg-type]
                             models=tuple(self.models or ()), allow_loosen=self.allow_loosen,
                             rpm=self.rpm, tpm=self.tpm, max_concurrency=self.max_concurrency))


def _aware(value: datetime) -> datetime:
    # SQLite gives naive datetimes back; they were stored in UTC
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def digest(token: str) -> str:
    """The stored form of a key. A plain SHA-256 is enough: keys carry 256 random bits, so there
    is nothing to brute-force and a slow password hash would only cost every request time."""
    return hashlib.sha256(token.encode()).hexdigest()


def keys_url(settings: Settings) -> str:
    """The key store's SQLAlchemy URL: ``keys_db``, or SQLite under ``var_dir``."""
    return settings.keys_db or f"sqlite:///{Path(settings.var_dir).resolve() / 'keys.sqlite'}"


class KeyStore:
    """Keys in any SQLAlchemy database; lookups are cached for ``ttl`` seconds, so a revoked
    key stops working within ``ttl``."""

    def __init__(self, url: str, *, ttl: float = 5.0):
        self.url = url
        self.ttl = ttl
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._any: tuple[float, bool] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyStore:
        return cls(keys_url(settings), ttl=settings.keys_cache_ttl)

    def _sqlite_file(self) -> Path | None:
        url = make_url(self.url)
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return Path(url.database)

    def _db(self, *, create: bool) -> Engine | None:
        """The engine; None when reading a SQLite file that does not exist yet (no keys), so
        a read never creates the file."""
        with self._lock:
            if self._engine is None:
                path = self._sqlite_file()
                if path is not None and not path.exists():
                    if not create:
                        return None
                    path.parent.mkdir(parents=True, exist_ok=True)
                self._engine = create_engine(self.url)
                _Base.metadata.create_all(self._engine)
            return self._engine

    def create(self, name: str, policy: KeyPolicy | None = None) -> tuple[KeyRecord, str]:
        """A new key: its record and the key itself, which is shown once and never stored."""
        token = PREFIX + secrets.token_urlsafe(32)
        policy = policy or KeyPolicy()
        row = _Key(id=uuid.uuid4().hex, digest=digest(token), prefix=token[:VISIBLE],
                   name=name, created=datetime.now(UTC), revoked=None,
                   **{**policy.as_dict(), "models": list(policy.models)})
        engine = self._db(create=True)
        assert engine is not None
        with Session(engine) as session, session.begin():
            session.add(row)
            record = row.record()
        self._forget()
        return record, token

    def list(self, *, include_revoked: bool = True) -> list[KeyRecord]:
        """Every key, oldest first."""
        engine = self._db(create=False)
        if engine is None:
            return []
        with Session(engine) as session:
            query = select(_Key).order_by(_Key.created)
            if not include_revoked:
                query = query.where(_Key.revoked.is_(None))
            return [row.record() for row in session.scalars(query)]

    def _find(self, session: Session, ref: str) -> _Key:
        row = session.get(_Key, ref)
        if row is not None:
            return row
        rows = list(session.scalars(select(_Key).where(_Key.prefix.startswith(ref))))
        if len(ref) < 4 or not rows:
            raise UnknownKey(f"no key with id or prefix {ref!r}")
        if len(rows) > 1:
            raise UnknownKey(f"prefix {ref!r} matches {len(rows)} keys; give the id")
        return rows[0]

    def get(self, ref: str) -> KeyRecord:
        """The key with this id or unique visible prefix."""
        engine = self._db(create=False)
        if engine is None:
            raise UnknownKey(f"no key with id or prefix {ref!r}")
        with Session(engine) as session:
            return self._find(session, ref).record()

    def revoke(self, ref: str) -> KeyRecord:
        """Revoke a key by id or unique visible prefix (revoking twice keeps the first time)."""
        engine = self._db(create=False)
        if engine is None:
            raise UnknownKey(f"no key with id or prefix {ref!r}")
        with Session(engine) as session, session.begin():
            row = self._find(session, ref)
            if row.revoked is None:
                row.revoked = datetime.now(UTC)
            record = row.record()
        self._forget()
        return record

    def update(self, ref: str, changes: dict[str, Any]) -> KeyRecord:
        """Change a key's name or policy fields; a None value restores the deployment's."""
        engine = self._db(create=False)
        if engine is None:
            raise UnknownKey(f"no key with id or prefix {ref!r}")
        with Session(engine) as session, session.begin():
            row = self._find(session, ref)
            current = row.record()
            policy = KeyPolicy.from_dict({**current.policy.as_dict(),
                                          **{k: v for k, v in changes.items() if k != "name"}})
            for name, value in policy.as_dict().items():
                setattr(row, name, value)
            if changes.get("name"):
                row.name = changes["name"]
            record = row.record()
        self._forget()
        return record

    def lookup(self, token: str) -> KeyRecord | None:
        """The active key for ``token`` (None when unknown or revoked), cached."""
        if not token.startswith(PREFIX):
            return None
        key = digest(token)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        engine = self._db(create=False)
        found = None
        if engine is not None:
            with Session(engine) as session:
                row = session.scalars(select(_Key).where(_Key.digest == key)).first()
                found = row.record() if row is not None and row.revoked is None else None
        if len(self._cache) > 10_000:  # unknown tokens must not grow it without end
            self._cache.clear()
        self._cache[key] = (now, found)
        return found

    def has_keys(self) -> bool:
        """Whether the store holds any key, revoked ones included (cached like lookups):
        revoking the last key must close the gateway, not open it."""
        now = time.monotonic()
        if self._any is not None and now - self._any[0] < self.ttl:
            return self._any[1]
        engine = self._db(create=False)
        found = False
        if engine is not None:
            with Session(engine) as session:
                found = session.scalars(select(_Key.id).limit(1)).first() is not None
        self._any = (now, found)
        return found

    def _forget(self) -> None:
        # this process's own changes apply at once; other replicas see them within ttl
        self._cache.clear()
        self._any = None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


CALLER = "guide_align_caller"  # the request.state entry app/limits.py sets
# where a client sends its own upstream key when its Authorization is a gateway key
UPSTREAM_AUTH = "x-upstream-authorization"


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a gateway key, the master key, or an address (no keys configured)."""

    identity: str  # what limits are counted by: "key:<id>", "master" or "addr:<host>"
    key: KeyRecord | None = None

    @property
    def policy(self) -> KeyPolicy:
        return self.key.policy if self.key is not None else KeyPolicy()

    @property
    def open(self) -> bool:
        """No key is configured: the caller presented no gateway credentials."""
        return self.identity.startswith("addr:")

    def applied(self, base: Policy, options: GuideOptions | None, *,
                allow_loosen: bool) -> Applied:
        """The deployment policy with this key's values in place, then the request's options:
        tightening only unless the key (or, for no key, the deployment) allows loosening."""
        p = self.policy
        loosen = allow_loosen if p.allow_loosen is None else p.allow_loosen
        return apply_options(p.over(base), options, allow_loosen=loosen)

    def check_model(self, model: str | None) -> None:
        """Forbidden (model_not_allowed) when this key may not use ``model``."""
        if not self.policy.allows(model):
            raise Forbidden(f"this key may not use model {model!r}; allowed: "
                            f"{', '.join(self.policy.models)}", param="model",
                            code="model_not_allowed")

    def upstream_auth(self, settings: Settings, headers: Mapping[str, str]) -> str | None:
        """The client's own upstream credentials, forwarded only with ``forward_client_auth``:
        its Authorization when that is not a gateway credential (no keys configured), else
        the ``x-upstream-authorization`` header. A gateway key never goes upstream."""
        if not settings.forward_client_auth:
            return None
        return headers.get("authorization") if self.open else headers.get(UPSTREAM_AUTH)


def caller_of(state: Any) -> Caller:
    """The caller that app/limits.py put on ``request.state`` (none: a local, keyless one)."""
    return getattr(state, CALLER, None) or Caller("local")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name to bind) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def keys_configured(settings: Settings, store: KeyStore) -> bool:
    """A master key is set or the store holds a key (once made, revoking keys never reopens
    the gateway)."""
    return settings.master_key is not None or store.has_keys()


def check_exposure(settings: Settings, store: KeyStore) -> str:
    """The start-up rule: with no key configured the gateway is open, which is allowed on a
    loopback host only (or with ``allow_open``). Returns the line to log; raises ExposureError."""
    if keys_configured(settings, store):
        return f"gateway keys required on {settings.host}:{settings.port}"
    if is_loopback(settings.host):
        return (f"open, no keys, loopback only: {settings.host}:{settings.port} serves anyone "
                "on this machine; create a key (`guide-align keys create`) or set "
                "GUIDE_ALIGN_MASTER_KEY before binding another address")
    if settings.allow_open:
        return (f"open, no keys, on {settings.host}:{settings.port} because ALLOW_OPEN is set: "
                "anyone who reaches this address may use the upstream")
    raise ExposureError(
        f"refusing to serve {settings.host} without gateway keys (an open relay): set "
        "GUIDE_ALIGN_MASTER_KEY or create a key with `guide-align keys create`, bind 127.0.0.1, "
        "or set GUIDE_ALIGN_ALLOW_OPEN=true")
