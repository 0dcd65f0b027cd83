"""The guideline library contract shared by the builder, the retriever, the gateway and finetune."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from guideline_lib.taxonomy import TAXONOMY, Kind

SCHEMA_VERSION = 1

Source = Literal["curated", "generated"]
Split = Literal["train", "test"]

MAX_GUIDELINE_CHARS = 600

_PUNCT = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Lower-case, NFKC, no punctuation, collapsed whitespace: the form ids are hashed from."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCT.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def guideline_id(text: str) -> str:
    """Stable id of a guideline: a short hash of its normalised text."""
    return "g_" + hashlib.sha1(normalise_text(text).encode("utf-8")).hexdigest()[:12]


def utc_now() -> str:
    """An ISO-8601 UTC timestamp, second precision."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


class Provenance(BaseModel):
    """Where a guideline came from: inputs, model and prompt version for generated ones."""

    model_config = ConfigDict(frozen=True, extra="allow")

    inputs: list[str] = Field(default_factory=list)
    model: str | None = None
    prompt_version: str | None = None
    created: str | None = None
    note: str | None = None


class Guideline(BaseModel):
    """One atomic guideline: 'Title: what the assistant should do'."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    text: str
    category: str
    kind: Kind
    source: Source = "curated"
    provenance: Provenance = Field(default_factory=Provenance)
    tags: list[str] = Field(default_factory=list)

    @classmethod
    def create(
        cls,
        text: str,
        category: str,
        *,
        source: Source = "curated",
        provenance: Provenance | None = None,
        tags: list[str] | None = None,
    ) -> Guideline:
        """Build a guideline with its id derived from the text and kind from the taxonomy."""
        text = _SPACE.sub(" ", text).strip()
        kind = TAXONOMY.get(category, "quality" if category.startswith("quality_") else "safety")
        return cls(
            id=guideline_id(text),
            text=text,
            category=category,
            kind=kind,
            source=source,
            provenance=provenance or Provenance(),
            tags=tags or [],
        )

    @property
    def title(self) -> str:
        """The part before the first colon."""
        head, sep, _ = self.text.partition(":")
        return head.strip() if sep else ""


class Example(BaseModel):
    """A training pair: an input and the guidelines a good retriever returns for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: str
    guideline_ids: list[str]
    split: Split = "train"


class Manifest(BaseModel):
    """What a library is, who made it and a hash of its content."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    name: str = "library"
    version: str = "0.1.0"
    created: str = Field(default_factory=utc_now)
    taxonomy: list[str] = Field(default_factory=lambda: list(TAXONOMY))
    counts: dict[str, int] = Field(default_factory=dict)
    producer: dict[str, Any] = Field(default_factory=dict)
    content_hash: str = ""


class Library(BaseModel):
    """Guidelines, examples and a manifest; the in-memory form of a library directory."""

    model_config = ConfigDict(extra="forbid")

    manifest: Manifest = Field(default_factory=Manifest)
    guidelines: list[Guideline] = Field(default_factory=list)
    examples: list[Example] = Field(default_factory=list)

    def by_id(self) -> dict[str, Guideline]:
        """Guidelines keyed by id."""
        return {g.id: g for g in self.guidelines}

    def content_hash(self) -> str:
        """sha256 over the canonical guideline and example lines (order-independent)."""
        h = hashlib.sha256()
        for line in sorted(g.model_dump_json() for g in self.guidelines):
            h.update(line.encode("utf-8"))
            h.update(b"\n")
        h.update(b"--examples--\n")
        for line in sorted(e.model_dump_json() for e in self.examples):
            h.update(line.encode("utf-8"))
            h.update(b"\n")
        return h.hexdigest()

    def counts(self) -> dict[str, int]:
        """Numbers the manifest records."""
        return {
            "guidelines": len(self.guidelines),
            "safety": sum(g.kind == "safety" for g in self.guidelines),
            "quality": sum(g.kind == "quality" for g in self.guidelines),
            "examples": len(self.examples),
            "examples_train": sum(e.split == "train" for e in self.examples),
            "examples_test": sum(e.split == "test" for e in self.examples),
        }

    def sealed(self) -> Library:
        """A copy whose manifest counts and content hash match the content."""
        manifest = self.manifest.model_copy(
            update={"counts": self.counts(), "content_hash": self.content_hash()}
        )
        return Library(manifest=manifest, guidelines=self.guidelines, examples=self.examples)
