"""The shipped starter library is exactly what its hand-written sources assemble into."""

from __future__ import annotations

from guideline_lib.io import default_library_path, load_library
from guideline_lib.starter import STARTER_VERSION, assemble_starter
from guideline_lib.validate import validate_library


def test_shipped_starter_equals_the_assembled_sources_and_validates():
    shipped = load_library(default_library_path())
    assembled = assemble_starter()
    assert shipped.content_hash() == assembled.content_hash(), (
        "guideline_lib/starter/ is out of date: run `guide-align library starter`")
    assert shipped.manifest.version == STARTER_VERSION
    report = validate_library(shipped)
    assert report.ok, [f.message for f in report.errors]
    assert not report.findings  # no warnings either
