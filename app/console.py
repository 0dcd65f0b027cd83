"""The console: one server-rendered page behind the admin key (playground, library browser,
versions and their diff, live counters) and the small JSON endpoints its script calls."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio.to_thread
import httpx
import orjson
from fastapi import APIRouter, Depends, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from app.auth import require_admin
from app.errors import BadRequest, GatewayError, NotReady, PayloadTooLarge, Unauthorized
from app.reload import Generation, current, library_history
from guideline_lib.schema import Guideline, Library
from guideline_lib.taxonomy import TAXONOMY
from guideline_lib.validate import diff_libraries
from retriever.types import SelectConfig

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
COOKIE = "guide_align_admin"
_templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                         autoescape=select_autoescape(["html"]))

router = APIRouter()
admin = APIRouter(dependencies=[Depends(require_admin)])


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _html(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_templates.get_template(template).render(**context), status_code=status)


def _master(request: Request) -> str:
    master = request.app.state.settings.master_key
    if master is None:
        raise NotReady("the console is off: set GUIDE_ALIGN_MASTER_KEY to enable it")
    return str(master.get_secret_value())


@router.get("/console/login", include_in_schema=False)
async def login_page(request: Request) -> HTMLResponse:
    """The admin-key form."""
    _master(request)
    return _html("login.html")


@router.post("/console/login", include_in_schema=False)
async def login(request: Request) -> Response:
    """Check the admin key from the form and set the console cookie (HttpOnly, SameSite=Strict)."""
    master = _master(request)
    raw = await request.body()
    if len(raw) > 4096:
        raise PayloadTooLarge("the login form is limited to 4096 bytes")
    key = (parse_qs(raw.decode("utf-8", "replace")).get("key") or [""])[0].strip()
    if not secrets.compare_digest(key.encode(), master.encode()):
        return _html("login.html", status=401, error="That is not the admin key.")
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


@router.post("/console/logout", include_in_schema=False)
async def logout() -> Response:
    """Forget the console cookie."""
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/console/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    """The page's script and style sheet (vendored here: no CDN, no build step)."""
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        return _json({"error": {"message": "not found", "type": "invalid_request_error",
                                "param": None, "code": None}}, status=404)
    return FileResponse(path)


@router.get("/console", include_in_schema=False)
async def console(request: Request) -> Response:
    """The console page; without the admin key, the login form."""
    try:
        require_admin(request)
    except Unauthorized:
        return RedirectResponse("/console/login", status_code=303)
    gen = current(request)
    categories = sorted({g.category for g in gen.library.guidelines} | set(TAXONOMY))
    return _html("console.html", info=gen.info(), categories=categories,
                 model=await _first_model(request))


async def _first_model(request: Request) -> str:
    """The upstream's first model id, to prefill the playground ("" when it cannot say)."""
    try:
        models = await request.app.state.upstream.get_json(
            "/models", timeout=request.app.state.settings.ready_timeout)
        return str(models["data"][0]["id"])
    except (GatewayError, KeyError, IndexError, TypeError):
        return ""


# -- playground ---------------------------------------------------------------------------


@admin.post("/admin/playground")
async def playground(request: Request) -> Response:
    """Send one chat through the gateway (as the admin) and return the answer beside the
    injected guidelines, the risk, the gate decision and any backtracking."""
    body = await request.body()
    try:
        data = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        raise BadRequest("the playground takes a JSON object") from None
    prompt = data.get("prompt") if isinstance(data, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest("prompt must be a non-empty string", param="prompt")
    chat: dict[str, Any] = {"model": str(data.get("model") or "default"), "stream": False,
                            "messages": [{"role": "user", "content": prompt}]}
    if isinstance(data.get("max_tokens"), int):
        chat["max_tokens"] = data["max_tokens"]
    gen = current(request)
    transport = httpx.ASGITransport(app=request.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.local",
                                 timeout=gen.settings.read_timeout + 30) as client:
        r = await client.post("/v1/chat/completions", json=chat,
                              headers={"authorization": f"Bearer {_master(request)}"})
    answer = r.json() if r.headers.get("content-type", "").startswith("application/json") \
        else {}
    if r.status_code != 200:
        return _json({"status": r.status_code, "error": answer.get("error") or r.text[:500]})
    field = answer.get("guide_align") or {}
    choices = answer.get("choices") or [{}]
    by_id = gen.library.by_id()
    guidelines = [{**g, "text": g.get("text") or (by_id[g["id"]].text if g["id"] in by_id
                                                   else "")}
                  for g in field.get("guidelines", [])]
    return _json({"status": 200, "answer": (choices[0].get("message") or {}).get("content"),
                  "guidelines": guidelines, "risk": field.get("risk"),
                  "backtrack": field.get("backtrack") or {
                      "state": r.headers.get("x-guide-align-backtrack", "off")},
                  "ignored": field.get("ignored", [])})


# -- library browser ----------------------------------------------------------------------


def _guideline(g: Guideline, library: Library, score: float | None = None) -> dict[str, Any]:
    examples = [{"input": e.input, "split": e.split} for e in library.examples
                if g.id in e.guideline_ids]
    return {"id": g.id, "text": g.text, "category": g.category, "kind": g.kind,
            "source": g.source, "tags": g.tags, "score": score,
            "provenance": g.provenance.model_dump(exclude_none=True), "examples": examples}


def _search(gen: Generation, q: str, category: str, kind: str, limit: int
            ) -> list[dict[str, Any]]:
    lib = gen.library
    keep = [g for g in lib.guidelines if (not category or g.category == category)
            and (not kind or g.kind == kind)]
    if not q:
        return [_guideline(g, lib) for g in sorted(keep, key=lambda g: (g.category, g.text))
                ][:limit]
    wanted = {g.id for g in keep}
    size = gen.retriever.size
    config = SelectConfig(k=size, min_score=-1.0, dedup_threshold=1.0, candidates=size,
                          safety_margin=None)
    hits = gen.retriever.search([q], config)
    by_id = lib.by_id()
    found = [_guideline(by_id[h.id], lib, round(h.score, 4)) for h in hits if h.id in wanted]
    words = q.lower().split()
    # a guideline whose text holds every word of the query leads, then by similarity
    found.sort(key=lambda g: (not all(w in g["text"].lower() for w in words),
                              -(g["score"] or 0.0)))
    return found[:limit]


@admin.get("/admin/library")
async def library(request: Request, q: str = "", category: str = "", kind: str = "",
                  limit: int = 50) -> Response:
    """The served library's guidelines with their examples and provenance: all of them, or
    ranked by similarity to ``q``; filtered by ``category`` and ``kind``."""
    if kind not in ("", "safety", "quality"):
        raise BadRequest("kind must be safety or quality", param="kind")
    if not 1 <= limit <= 500:
        raise BadRequest("limit must be between 1 and 500", param="limit")
    if len(q) > 2000:
        raise BadRequest("q is limited to 2000 characters", param="q")
    gen = current(request)
    rows = await anyio.to_thread.run_sync(_search, gen, q.strip(), category, kind, limit)
    m = gen.library.manifest
    return _json({"object": "list", "library": m.name, "version": m.version,
                  "total": gen.retriever.size, "data": rows})


@admin.get("/admin/library/versions")
async def versions(request: Request) -> Response:
    """The library versions this gateway has served (newest last) and the diff of the last
    two."""
    history = library_history(request.app)
    out: dict[str, Any] = {"versions": [{k: v for k, v in h.items() if not k.startswith("_")}
                                        for h in history], "diff": None}
    if len(history) >= 2:
        old, new = history[-2], history[-1]
        d = diff_libraries(old["_library"], new["_library"])
        brief = ("id", "text", "category", "kind")
        out["diff"] = {
            "from": old["library_version"], "to": new["library_version"],
            "added": [g.model_dump(include=set(brief)) for g in d.added],
            "removed": [g.model_dump(include=set(brief)) for g in d.removed],
            "changed": [{"id": b.id, "text": b.text, "before": a.category,
                         "after": b.category} for a, b in d.changed]}
    return _json(out)


# -- live counters --------------------------------------------------------------------------

# The metrics families the console shows, and the label each is broken down by.
COUNTERS = {"guide_align_requests": "status", "guide_align_guidelines_injected": "kind",
            "guide_align_risk_gate_decisions": "outcome",
            "guide_align_backtrack_retractions": "mode", "guide_align_rate_limited": "code",
            "guide_align_upstream_errors": "kind"}


def summarise(text: str) -> dict[str, Any]:
    """Totals (and a breakdown by one label) of the console's families in a /metrics text."""
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        if family.name in COUNTERS:
            label = COUNTERS[family.name]
            total, by = 0.0, dict[str, float]()
            for s in family.samples:
                if s.name.endswith("_total"):
                    total += s.value
                    key = s.labels.get(label, "")
                    by[key] = by.get(key, 0.0) + s.value
            out[family.name] = {"total": total, "by": by}
        elif family.name == "guide_align_request_duration_seconds":
            count = sum(s.value for s in family.samples if s.name.endswith("_count"))
            total = sum(s.value for s in family.samples if s.name.endswith("_sum"))
            out["mean_request_seconds"] = round(total / count, 4) if count else None
    return out


@admin.get("/admin/stats")
async def stats(request: Request) -> Response:
    """Live counters: the gateway's /metrics, summarised, plus what this process knows itself
    (requests in flight and served on the current generation, reloads)."""
    gen = current(request)
    own = {"generation": gen.number, "in_flight": max(gen.pins.count - 1, 0),
           "served_this_generation": gen.pins.served,
           "reloads": getattr(request.app.state, "reloads", 0)}
    transport = httpx.ASGITransport(app=request.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.local",
                                 timeout=10) as client:
        r = await client.get("/metrics", headers={"authorization":
                                                  f"Bearer {_master(request)}"})
    if r.status_code != 200:
        return _json({"metrics": None, "own": own})
    return _json({"metrics": await anyio.to_thread.run_sync(summarise, r.text), "own": own})


router.include_router(admin)
