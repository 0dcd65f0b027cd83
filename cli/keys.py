"""`guide-align keys ...`: create, list and revoke gateway keys in the key store."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from app.keys import KeyPolicy, KeyStore, UnknownKey
from cli.common import console, fail, settings

app = typer.Typer(help="Gateway keys: who may call the gateway, with which policy and limits.",
                  no_args_is_help=True)
Opt = typer.Option


def _store() -> KeyStore:
    return KeyStore.from_settings(settings())


@app.command()
def create(
    name: Annotated[str, Opt("--name", help="Who or what the key is for")],
    k: Annotated[int | None, Opt(help="Guidelines injected (default: the deployment's)")] = None,
    risk_threshold: Annotated[float | None, Opt(help="Risk-gate threshold")] = None,
    backtrack: Annotated[str | None, Opt(help="off, monitor or enforce")] = None,
    refine: Annotated[str | None, Opt(help="off, retrieve, auto or rewrite")] = None,
    model: Annotated[list[str] | None, Opt("--model", help="An upstream model this key may "
                                           "use (repeat; none: all)")] = None,
    allow_loosen: Annotated[bool | None, Opt("--allow-loosen/--no-allow-loosen",
                                             help="May its requests loosen the policy")] = None,
    rpm: Annotated[int | None, Opt(help="Requests per minute (0: unlimited)")] = None,
    tpm: Annotated[int | None, Opt(help="Tokens per minute (0: unlimited)")] = None,
    max_concurrency: Annotated[int | None, Opt(help="Requests at a time")] = None,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    for value, allowed, option in ((backtrack, ("off", "monitor", "enforce"), "--backtrack"),
                                   (refine, ("off", "retrieve", "auto", "rewrite"), "--refine")):
        if value is not None and value not in allowed:
            raise fail(f"{option} must be one of {', '.join(allowed)}")
    try:
        policy = KeyPolicy(k=k, risk_threshold=risk_threshold, backtrack=backtrack,  # type: ignore[arg-type]
                           refine=refine,  # type: ignore[arg-type]
                           models=tuple(model or ()), allow_loosen=allow_loosen, rpm=rpm,
                           tpm=tpm, max_concurrency=max_concurrency)
    except ValueError as exc:
        raise fail(str(exc)) from None
    store = _store()
    record, token = store.create(name, policy)
    console.print(f"created key {record.id} ({escape(name)}) in {store.url}")
    console.print("store it now, it is not shown again:")
    print(token)


def _describe(policy: KeyPolicy) -> str:
    parts = [f"{n}={v}" for n, v in policy.as_dict().items()
             if v is not None and n != "models"]
    if policy.models:
        parts.append("models=" + ",".join(policy.models))
    return " ".join(parts) or "deployment's"


@app.command(name="list")
def list_keys(
    all_keys: Annotated[bool, Opt("--all/--active", help="Include revoked keys")] = True,
) -> None:
    """The keys in the store: id, visible prefix, name, dates and policy (never the key)."""
    records = _store().list(include_revoked=all_keys)
    table = Table(title=f"{len(records)} gateway keys")
    for column in ("id", "prefix", "name", "created", "revoked", "policy"):
        table.add_column(column)
    for r in records:
        table.add_row(r.id, r.prefix + "…", escape(r.name), f"{r.created:%Y-%m-%d %H:%M}",
                      f"{r.revoked:%Y-%m-%d %H:%M}" if r.revoked else "",
                      escape(_describe(r.policy)))
    console.print(table)


@app.command()
def revoke(
    ref: Annotated[str, typer.Argument(metavar="ID_OR_PREFIX", help="The key's id or the "
                                       "visible prefix `keys list` shows")],
) -> None:
    """Revoke a key; gateways stop accepting it within KEYS_CACHE_TTL seconds."""
    try:
        record = _store().revoke(ref)
    except UnknownKey as exc:
        raise fail(str(exc)) from None
    console.print(f"revoked key {record.id} ({escape(record.name)}, {record.prefix}…)")
