"""Collecting the upstream's benign answers as critic data (judge/upstream_spans.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from judge.critic import critic_families
from judge.upstream_spans import collect, family_id
from tests.fakes.server import ServerThread


def _upstream(asked: list[str]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    def chat(body: dict[str, Any]) -> dict[str, Any]:
        prompt = body["messages"][-1]["content"]
        asked.append(prompt)
        text = "ok" if prompt == "short" else f"Here is a plain answer to {prompt} in a few words."
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}

    return app


def test_a_killed_collection_resumes_without_asking_twice(tmp_path: Path) -> None:
    out = tmp_path / "critic_upstream.json"
    partial = tmp_path / "critic_upstream.json.partial.jsonl"
    # a run killed after one answer, in the middle of writing the second line
    partial.write_text(json.dumps({"prompt": "how do i proof yeast",
                                   "answer": "Stir it into warm water with a pinch of sugar and "
                                             "wait ten minutes for foam."}) + "\n{\"prompt\": \"ho",
                       "utf-8")
    asked: list[str] = []
    prompts = ["how do i proof yeast", "how do i tune a ukulele", "short",
               "how do i tune a ukulele", "what is a haiku"]
    with ServerThread(_upstream(asked)) as server:
        data = collect(prompts, out, base_url=f"{server.url}/v1", max_tokens=16)
    assert asked == ["how do i tune a ukulele", "short", "what is a haiku"]
    assert not partial.exists()
    # answers under eight words are left out; every family is benign, English, one per prompt
    families = critic_families(out)
    assert families == data["families"]
    assert [f["spans"]["en"][0] for f in families] == [
        "how do i proof yeast", "how do i tune a ukulele", "what is a haiku"]
    assert {f["label"] for f in families} == {"safe"}
    assert families[0]["id"] == family_id("how do i proof yeast")
    assert "max_tokens 16" in data["about"]
