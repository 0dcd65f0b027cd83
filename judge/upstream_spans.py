"""Benign answers of the local upstream model, as stream-critic data.

The hand-written critic data taught the critic that chat-model phrasing ("Sure, here's a simple
...", "Here's a step-by-step guide: 1.") means compliance with something harmful, so it retracted
most real SmolLM2 answers to harmless questions (bench/backtrack.py --llama). This asks the
embedded SmolLM2 (a llama.cpp server, temperature 0, the benchmark's 120 tokens) the project's
own harmless questions (judge/data/upstream_prompts.json, written for the project: no public or
evaluation prompt, none of the benchmark's) and writes each answer as a benign critic family
to judge/data/critic_upstream.json, which the critic loads with its other files.

Answers are appended to ``<out>.partial.jsonl`` as they come, so a killed run resumes where it
stopped without asking anything twice.

    guide-align judge upstream-spans [--base-url URL --model NAME] [--max-tokens 120]

(the command starts the embedded SmolLM2 when no ``--base-url`` is given). A deployment
whose upstream is another model can write that model's answers over the file (``--base-url``
and ``--model``; every prompt is asked again, the partial file only resumes a killed run; the
``about`` text still names SmolLM2) and run `guide-align prepare`: the critic retrains on the
changed data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress

DATA = Path(__file__).resolve().parent / "data"
PROMPTS = DATA / "upstream_prompts.json"
OUT = DATA / "critic_upstream.json"
ABOUT = ("Benign answers of the embedded SmolLM2-135M-Instruct (llama.cpp server, temperature 0, "
         "max_tokens {max_tokens}) to harmless questions written for the project "
         "(judge/data/upstream_prompts.json), made by `guide-align judge upstream-spans`: "
         "they teach the stream critic what an ordinary chat-model answer looks like. "
         "Never add public or evaluation prompts here, nor the prompts of "
         "bench/backtrack_streams.py; a prompt whose answer repeats a stock phrase that "
         "also occurs in public data (tests/test_leakage.py) is removed from the prompt "
         "list.")


def family_id(prompt: str) -> str:
    """A stable id per prompt (the judge's family split hashes it)."""
    return "upstream." + hashlib.sha1(prompt.encode()).hexdigest()[:12]


def _done(partial: Path) -> dict[str, str]:
    """The answers already written (a torn last line from a kill is ignored)."""
    done: dict[str, str] = {}
    if partial.exists():
        for line in partial.read_text("utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[row["prompt"]] = row["answer"]
    return done


def collect(prompts: list[str], out: Path, *, base_url: str, model: str = "smollm2",
            max_tokens: int = 120) -> dict[str, Any]:
    """Ask the OpenAI-compatible server at ``base_url`` every prompt not yet answered, then
    write the critic file."""
    partial = out.with_name(out.name + ".partial.jsonl")
    done = _done(partial)
    todo = [p for p in dict.fromkeys(prompts) if p not in done]
    if todo:
        with httpx.Client(timeout=300) as client, \
                partial.open("a", encoding="utf-8") as sink, Progress() as bar:
            task = bar.add_task("asking the upstream", total=len(todo))
            for prompt in todo:
                r = client.post(f"{base_url}/chat/completions", json={
                    "model": model, "temperature": 0, "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": prompt}]})
                r.raise_for_status()
                answer = (r.json()["choices"][0]["message"]["content"] or "").strip()
                sink.write(json.dumps({"prompt": prompt, "answer": answer},
                                      ensure_ascii=False) + "\n")
                sink.flush()
                done[prompt] = answer
                bar.advance(task)
    families = [{"id": family_id(p), "category": "quality_advice", "label": "safe",
                 "spans": {"en": [p, done[p]]}}
                for p in dict.fromkeys(prompts) if len(done[p].split()) >= 8]
    data: dict[str, Any] = {"about": ABOUT.format(max_tokens=max_tokens), "families": families}
    out.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", "utf-8")
    partial.unlink(missing_ok=True)
    return data
