"""Credential scrubbing for log lines and relayed upstream errors.

URL userinfo, bearer/basic credentials, ``api_key=``-style query parameters and the configured
secrets (the upstream key, the base URL's password) are replaced by ``***``.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from app.config import Settings

MASK = "***"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host
    (re.compile(r"(?<=://)[^/\s@:'\"]+:[^/\s@'\"]*@"), MASK + "@"),
    # Authorization values, in headers or repeated in a message
    (re.compile(r"\b(Bearer|Basic)(\s+)[A-Za-z0-9._~+/=-]{4,}", re.IGNORECASE),
     r"\1\2" + MASK),
    # ?api_key=..., &token=..., "password=..." in URLs and form bodies
    (re.compile(r"\b((?:api[_-]?key|access[_-]?token|token|key|secret|password|passwd|"
                r"auth|authorization|sig|signature)=)[^&\s\"'<>]+", re.IGNORECASE), r"\1" + MASK),
    # "api_key": "...", "authorization": "..." in echoed JSON
    (re.compile(r"(\"(?:api[_-]?key|authorization|password|secret|token|x-api-key)\"\s*:\s*\")"
                r"[^\"]*", re.IGNORECASE), r"\1" + MASK),
    # OpenAI-style keys
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-" + MASK),
)


class Scrubber:
    """Replaces credentials in text: the generic patterns plus registered literal secrets."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Register more literal secrets (too short ones are ignored: they would mask words)."""
        with self._lock:
            merged = set(self._secrets) | {s for s in secrets if s and len(s) >= 4}
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        return text


def settings_secrets(settings: Settings) -> list[str]:
    """The literal secrets in the settings: the upstream, admin, refiner and guard keys, the
    base URL's password and its basic-auth encoding."""
    found = [s.get_secret_value() for s in (settings.upstream_api_key, settings.master_key,
                                             settings.refine_api_key,
                                             settings.backtrack_guard_api_key) if s is not None]
    parts = urlsplit(settings.upstream_base_url)
    if parts.password:
        user, password = unquote(parts.username or ""), unquote(parts.password)
        found += [password, parts.password,
                  base64.b64encode(f"{user}:{password}".encode()).decode()]
    return found


def scrub_data(data: Any, scrubber: Callable[[str], str]) -> Any:
    """A JSON value with every string in it (keys included) passed through ``scrubber``."""
    if isinstance(data, str):
        return scrubber(data)
    if isinstance(data, dict):
        return {scrubber(str(k)): scrub_data(v, scrubber) for k, v in data.items()}
    if isinstance(data, list):
        return [scrub_data(v, scrubber) for v in data]
    return data


def redact_url(url: str) -> str:
    """``url`` without its userinfo, for display."""
    return _PATTERNS[0][0].sub(MASK + "@", url)


# One scrubber for the process: logging is process-wide too.
_SCRUB = Scrubber()
_installed = False


def scrub(text: str) -> str:
    """``text`` with credentials masked (the process scrubber)."""
    return _SCRUB(text)


class ScrubFilter(logging.Filter):
    """A logging filter that masks credentials in the record's message and traceback."""

    def __init__(self, scrubber: Callable[[str], str] = scrub):
        super().__init__()
        self.scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record, self.scrubber)
        return True


def scrub_record(record: logging.LogRecord, scrubber: Callable[[str], str] = scrub) -> None:
    """Mask credentials in ``record`` in place: message, arguments and exception text."""
    if getattr(record, "_scrubbed", False):
        return
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: leave it to the handler's own error path
        return
    clean = scrubber(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = scrubber(record.exc_text)
    record._scrubbed = True


def install_scrub_filter(secrets: Iterable[str] = ()) -> None:
    """Mask credentials in every log record of the process, whichever logger or handler
    (the gateway's, uvicorn's, httpx's): registers ``secrets`` and wraps the record factory
    once, so handlers configured later are covered too."""
    _SCRUB.add(secrets)
    global _installed
    if _installed:
        return
    _installed = True
    make = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make(*args, **kwargs)
        scrub_record(record)
        return record

    logging.setLogRecordFactory(factory)
