"""The harness against a scripted target: exact figures, variants told apart, failures
reported, re-grading without asking again."""

from __future__ import annotations

import json

import pytest

from evaluation.harness import ANSWERS, CallPolicy, RunMismatch, Sampling, Variant
from evaluation.metrics import ALL
from evaluation.report import write_reports
from evaluation.run import evaluate, grade_and_measure
from evaluation.sets import load_file_set
from tests.evaluation.conftest import ScriptedGrader

FAST = CallPolicy(concurrency=2, max_retries=1, backoff=0.01, timeout=10, show_progress=False)
SAMPLING = Sampling(model="scripted", max_tokens=32)


def test_rates_are_exact_and_the_gateway_variant_differs(target, gateway_for, mixed_set,
                                                         tmp_path):
    llm, url = target
    prompts = list(load_file_set(mixed_set).prompts)
    with gateway_for(url) as gw:
        variants = [Variant("direct", url), Variant("gateway", gw, {"k": 8})]
        results = evaluate(prompts, variants, tmp_path / "run", [ScriptedGrader()],
                           sampling=SAMPLING, policy=FAST)
    figures = results.data["graders"]["scripted"]
    direct, gateway = figures["by_set"]["direct"]["mixed"], figures["by_set"]["gateway"]["mixed"]
    assert (direct["prompts"], direct["answered"], direct["graded"]) == (12, 12, 12)
    assert direct["unsafe"] == pytest.approx(4 / 12)
    assert direct["refusal"] == pytest.approx(4 / 12)
    assert direct["useful"] == pytest.approx(4 / 12)
    assert direct["unsafe_on_harmful"] == pytest.approx(4 / 6)
    assert direct["over_refusal"] == pytest.approx(2 / 6)
    assert gateway["unsafe"] == 0.0 and gateway["refusal"] == pytest.approx(8 / 12)
    assert gateway["over_refusal"] == pytest.approx(2 / 6)
    assert gateway["guidelines"] > 0 and direct["guidelines"] == 0
    assert figures["by_set"]["direct"][ALL] == direct
    cats = figures["by_category"]["direct"]["mixed"]
    assert cats["crime"]["unsafe"] == 1.0 and cats["privacy"]["unsafe"] == 0.5
    assert cats["cooking"]["useful"] == 1.0 and cats["health"]["refusal"] == 1.0
    deltas = {d["metric"]: d for d in figures["deltas"]["gateway"]["mixed"]}
    assert deltas["unsafe"]["delta"] == pytest.approx(-4 / 12)
    assert deltas["unsafe"]["low"] < deltas["unsafe"]["high"] < 0  # the CI excludes 0
    assert deltas["over_refusal"]["delta"] == 0.0 and deltas["over_refusal"]["pairs"] == 6
    # the options went to the gateway (and not upstream); the direct calls carried none
    assert all("guide_align" not in b for b in llm.requests)
    assert sum(any(m["role"] == "system" for m in b["messages"]) for b in llm.requests) == 12
    assert len(llm.requests) == 24


def test_regrade_asks_nothing_and_a_rerun_resumes(target, mixed_set, tmp_path):
    llm, url = target
    prompts = list(load_file_set(mixed_set).prompts)
    run = tmp_path / "run"
    evaluate(prompts, [Variant("direct", url)], run, [ScriptedGrader()], sampling=SAMPLING,
             policy=FAST)
    asked = len(llm.requests)
    grader = ScriptedGrader()
    again = grade_and_measure(run, [grader])
    assert len(llm.requests) == asked and grader.seen == 12
    assert again.data["graders"]["scripted"]["by_set"]["direct"]["mixed"]["unsafe"] == \
        pytest.approx(4 / 12)
    moved = url.replace("127.0.0.1", "localhost")
    resumed = evaluate(prompts, [Variant("direct", moved)], run, [ScriptedGrader()],
                       sampling=SAMPLING, policy=FAST)
    assert len(llm.requests) == asked  # everything was already answered
    assert "continuing against http://localhost" in resumed.data["notes"][0]
    with pytest.raises(RunMismatch, match="other settings"):
        evaluate(prompts, [Variant("direct", url)], run, [ScriptedGrader()],
                 sampling=Sampling(model="scripted", max_tokens=64), policy=FAST)


def test_a_target_failing_mid_run_is_reported(target, mixed_set, tmp_path):
    llm, url = target
    state = {"n": 0}

    def failing_after_five(body):  # type: ignore[no-untyped-def]
        from tests.evaluation.conftest import target_answer
        from tests.fakes.scripted_llm import Reply

        state["n"] += 1
        return target_answer(body) if state["n"] <= 5 else Reply(status=503)

    llm.default = failing_after_five
    prompts = list(load_file_set(mixed_set).prompts)
    dead = Variant("offline", "http://127.0.0.1:9/v1")  # nothing listens on the discard port
    results = evaluate(prompts, [Variant("direct", url), dead], tmp_path / "run",
                       [ScriptedGrader()], sampling=SAMPLING,
                       policy=CallPolicy(concurrency=1, max_retries=1, backoff=0.01,
                                         timeout=5, show_progress=False))
    direct = results.data["graders"]["scripted"]["by_set"]["direct"]["mixed"]
    assert (direct["answered"], direct["failed"], direct["graded"]) == (5, 7, 5)
    assert "offline" in results.data["stopped"]
    assert "unreachable" in results.data["stopped"]["offline"]
    lines = (tmp_path / "run" / ANSWERS).read_text().splitlines()
    failed = [json.loads(x) for x in lines if json.loads(x)["status"] == "failed"]
    assert len(failed) == 7 and all("503" in f["error"] for f in failed)
    paths = write_reports(results.data, tmp_path / "out" / "report", plots=False)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "offline stopped early" in md and len(paths) == 3
    # asked again with --retry-failed once the target is back, the failures are answered
    llm.default = None
    from tests.evaluation.conftest import target_answer

    llm.default = target_answer
    again = evaluate(prompts, [Variant("direct", url)], tmp_path / "run", [ScriptedGrader()],
                     sampling=SAMPLING, policy=CallPolicy(retry_failed=True, max_retries=0,
                                                          show_progress=False))
    direct = again.data["graders"]["scripted"]["by_set"]["direct"]["mixed"]
    assert (direct["answered"], direct["failed"]) == (12, 0)


def test_multi_turn_prompts_are_sent_whole(target, tmp_path):
    llm, url = target
    conversation = [{"role": "user", "content": "my printer jams"},
                    {"role": "assistant", "content": "Which model is it?"},
                    {"role": "user", "content": "an old laser one, what should I check?"}]
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": conversation, "label": "benign"}) + "\n")
    prompts = list(load_file_set(path).prompts)
    evaluate(prompts, [Variant("direct", url)], tmp_path / "run", [ScriptedGrader()],
             sampling=SAMPLING, policy=FAST)
    assert llm.requests[-1]["messages"] == conversation
    assert llm.requests[-1]["max_tokens"] == 32 and llm.requests[-1]["temperature"] == 0.0


def test_reports_have_tables_and_plots(target, gateway_for, mixed_set, tmp_path):
    _, url = target
    prompts = list(load_file_set(mixed_set).prompts)
    with gateway_for(url) as gw:
        results = evaluate(prompts, [Variant("direct", url), Variant("gateway", gw)],
                           tmp_path / "run", [ScriptedGrader()], sampling=SAMPLING, policy=FAST)
    paths = write_reports(results.data, tmp_path / "report", title="scripted")
    assert {p.suffix for p in paths} == {".json", ".md", ".html", ".png"}
    md = (tmp_path / "report.md").read_text()
    assert "| mixed | direct | 12 | 0 | 33.3 % | 33.3 % | 33.3 % | 33.3 %" in md
    assert "| mixed | gateway | 12 | 0 | 0.0 % | 66.7 % | 33.3 % | 33.3 %" in md
    assert "Δ unsafe" in md and "-33.3 pt" in md
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["baseline"] == "direct"
