"""`guide-align eval`: a whole run with an LLM judge, re-grading from the answer cache, and
clear errors for bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.evaluation.conftest import target_answer, write_jsonl
from tests.fakes.scripted_llm import Reply, ScriptedLLM, system_text
from tests.fakes.server import ServerThread, free_port


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["eval", *args])
    return result.exit_code, " ".join(result.output.split())


def target_and_judge(body: dict[str, Any]) -> str | Reply:
    """The scripted target, and an LLM judge that labels its answers (with some noise)."""
    if system_text(body).startswith("You grade one reply"):
        reply = body["messages"][-1]["content"].split("Reply to grade:\n", 1)[1]
        label = "unsafe" if reply.startswith("UNSAFE") else \
            "refusal" if reply.startswith("I can't") else "useful"
        return f"<think>Let me weigh this.</think>\n**Label:** {label.upper()}"
    return target_answer(body)


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    llm = ScriptedLLM(default=target_and_judge)
    with ServerThread(llm.app()) as s:
        yield llm, f"{s.url}/v1"


def test_a_run_with_an_llm_judge_then_a_regrade(server, mixed_set, tmp_path):
    llm, url = server
    out = tmp_path / "run"
    common = ["--grader", "llm", "--judge-url", url, "--judge-model", "judge", "-o", str(out)]
    code, output = run_cli(str(mixed_set), "--target", url, "--model", "m", "--variant",
                           f"tight={url}", "--variant-options", 'tight={"k": 9}',
                           "--max-tokens", "16", *common)
    assert code == 0, output
    assert "mixed" in output and "33.3 %" in output
    data = json.loads((out / "report.json").read_text())
    rates = data["graders"]["llm"]["by_set"]
    assert rates["direct"]["mixed"]["unsafe_on_harmful"] == pytest.approx(4 / 6)
    assert set(rates) == {"direct", "tight"}
    assert data["variants"]["tight"]["options"] == {"k": 9}
    bodies = [b for b in llm.requests if not system_text(b).startswith("You grade")]
    assert len(bodies) == 24 and sum("guide_align" in b for b in bodies) == 12
    asked = len(llm.requests)
    code, output = run_cli("--regrade", *common, "--report", str(tmp_path / "again"))
    assert code == 0, output
    assert len(llm.requests) == asked  # neither the target nor the judge asked again
    assert json.loads((tmp_path / "again.json").read_text())["graders"] == data["graders"]


@pytest.mark.parametrize(("args", "message"), [
    ([], "name at least one set"),
    (["do_not_answer", "--target", "http://x/v1", "--model", "m"], "pass --data"),
    (["missing.jsonl", "--target", "http://x/v1", "--model", "m"], "no such file"),
    (["{set}"], "--target and --model are required"),
    (["{set}", "--target", "http://x/v1", "--model", "m", "--variant", "gw=nothing.toml"],
     "neither an http(s) URL nor a config file"),
    (["{set}", "--target", "http://x/v1", "--model", "m", "--variant", "oops"],
     "must look like NAME=VALUE"),
    (["{set}", "--target", "http://x/v1", "--model", "m", "--variant", "direct=http://y/v1"],
     "variant names must be unique"),
    (["{set}", "--target", "http://x/v1", "--model", "m", "--variant-options", "gw={k: 1}"],
     "not JSON"),
    (["{set}", "--target", "http://x/v1", "--model", "m", "--variant-options", "gw=[1]"],
     "must be a JSON object"),
    (["{set}", "--target", "http://x/v1", "--model", "m", "--variant-options", 'gw={"k": 1}'],
     "unknown variant"),
    (["{set}", "--label", "maybe"], "--label must be harmful or benign"),
    (["{set}", "--grader", "llm"], "needs --judge-url and --judge-model"),
    (["{set}", "--grader", "gpt"], "--grader must be judge, llm or both"),
    (["--regrade", "--grader", "llm", "--judge-url", "http://x/v1", "--judge-model", "j",
      "-o", "{tmp}/nothing"], "not an eval run directory"),
])
def test_bad_input_gets_a_clear_error(args, message, tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"text": "hello"}])
    args = [a.replace("{set}", str(path)).replace("{tmp}", str(tmp_path)) for a in args]
    code, output = run_cli(*args, *(["-o", str(tmp_path / "o")] if "-o" not in args else []))
    assert code == 2, output
    assert message in output and "Traceback" not in output


def test_an_unreachable_target_is_reported_not_crashed_on(server, mixed_set, tmp_path):
    _, url = server
    dead = f"http://127.0.0.1:{free_port()}/v1"
    code, output = run_cli(str(mixed_set), "--target", dead, "--model", "m", "--retries", "0",
                           "--grader", "llm", "--judge-url", url, "--judge-model", "j",
                           "-o", str(tmp_path / "run"))
    assert code == 3, output
    assert "variant direct stopped early" in output and "rerun the same command" in output
    assert (tmp_path / "run" / "report.md").is_file()
