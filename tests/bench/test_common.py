"""Benchmarks leave the checkout clean unless asked to write their committed results."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from bench.common import RESULTS, UNTRACKED, add_out_argument, results_path, save_results

ROOT = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_out_argument(parser)
    return parser.parse_args(argv)


def test_without_out_results_go_to_an_ignored_folder():
    path = results_path("index_scale", parse().out)
    assert path == UNTRACKED / "index_scale.json"
    assert not path.is_relative_to(RESULTS)
    # git ignores it, so a run does not dirty the checkout
    ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT)
    assert ignored.returncode == 0


@pytest.mark.parametrize(("argv", "expected"), [
    (("--out",), RESULTS / "judge_quality.json"),
    (("--out", "elsewhere/run.json"), Path("elsewhere/run.json")),
])
def test_out_writes_the_committed_file_or_the_given_path(argv, expected):
    assert results_path("judge_quality", parse(*argv).out) == expected


def test_save_results_writes_where_asked(tmp_path):
    target = tmp_path / "deep" / "r.json"
    assert save_results("x", {"a": 1}, str(target)) == target
    assert target.read_text() == '{\n  "a": 1\n}\n'
