"""How guidance shows on the wire: response headers naming the guidelines used."""

from __future__ import annotations

from urllib.parse import quote

from guide.step import Guidance


def header_token(text: str) -> str:
    """``text`` safe for a comma-separated header value: anything but [A-Za-z0-9_.-] is
    percent-encoded (a hand-edited library may hold non-Latin-1 category names)."""
    return quote(text, safe="_.-")


def guidance_headers(guidance: Guidance) -> dict[str, str]:
    """Response headers naming the guidelines used (and request options that were ignored)."""
    cats = list(dict.fromkeys(h.category for h in guidance.hits))
    headers = {
        "x-guide-align-guidelines": ",".join(header_token(h.id) for h in guidance.hits),
        "x-guide-align-categories": ",".join(header_token(c) for c in cats),
    }
    if guidance.risk is not None:
        top = ",".join(f"{header_token(c)}={v:.3f}" for c, v in guidance.risk.top(3))
        headers["x-guide-align-risk"] = f"{guidance.risk.score:.3f};gate={guidance.gate}" + (
            f";{top}" if top else "")
    if guidance.ignored:
        headers["x-guide-align-ignored"] = ",".join(guidance.ignored)
    return headers
