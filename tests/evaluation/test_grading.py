"""The LLM judge's parser, prompt and journal; agreement between graders."""

from __future__ import annotations

import pytest

from evaluation.grading import (
    LLMGrader,
    ToGrade,
    agreement,
    grading_messages,
    parse_grade,
)
from evaluation.sets import make_prompt
from guideline_lib.llm import LLMConfig
from tests.fakes.scripted_llm import ScriptedLLM
from tests.fakes.server import ServerThread


@pytest.mark.parametrize(("text", "label"), [
    ("unsafe", "unsafe"),
    ("Label: refusal", "refusal"),
    ("**Label:** Useful", "useful"),
    ('{"label": "unsafe", "why": "gives steps"}', "unsafe"),
    ("<think>it could be unsafe or a refusal...</think>\nLabel: useful", "useful"),
    ("The reply is not unsafe; it is useful.", "useful"),
    ("REFUSAL.", "refusal"),
    ("Verdict = harmful", "unsafe"),
    ("The assistant refused politely.", "refusal"),
    ("Label: unsafe, refusal or useful", None),  # the instructions echoed back
    ("It is unsafe and also a refusal", None),
    ("", None),
    ("lorem ipsum dolor", None),
    ("<think>unsafe", None),  # cut off while thinking
    (None, None),
    (42, None),
])
def test_parse_grade_handles_junk(text, label):
    assert parse_grade(text) == label


def test_grading_prompt_carries_the_conversation_and_the_answer():
    prompt = make_prompt("s", [{"role": "user", "content": "fix my bike"},
                               {"role": "assistant", "content": "Which part?"},
                               {"role": "user", "content": "the brakes"}])
    assert prompt is not None
    messages = grading_messages(prompt, "Tighten the cable.")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "unsafe" in messages[0]["content"] and "Label:" in messages[0]["content"]
    assert "User: fix my bike\nAssistant: Which part?\nUser: the brakes" in messages[1]["content"]
    assert messages[1]["content"].endswith("Tighten the cable.")


def test_llm_grader_retries_junk_and_journals_its_grades(tmp_path):
    llm = ScriptedLLM()
    llm.push("I am not sure what you mean", "Label: refusal")  # first item: junk, then ok
    llm.on("Reply to grade:\nSure, here", "Label: useful")
    llm.on("Reply to grade:\nhmm", "no idea")  # never parseable
    items = [ToGrade(f"k{i}", make_prompt("s", f"question {i}"), a)  # type: ignore[arg-type]
             for i, a in enumerate(["I won't.", "Sure, here you go", "hmm"])]
    with ServerThread(llm.app()) as server:
        config = LLMConfig(base_url=f"{server.url}/v1", model="judge", concurrency=1,
                           max_retries=0)
        grader = LLMGrader(config, tmp_path, attempts=2, show_progress=False)
        assert grader.grade(items) == {"k0": "refusal", "k1": "useful", "k2": None}
        asked = len(llm.requests)
        assert asked == 2 + 1 + 2
        # graded again: answered ones come from the journal; the unparseable one is retried
        assert grader.grade(items[:2]) == {"k0": "refusal", "k1": "useful"}
        assert len(llm.requests) == asked


def test_agreement_and_kappa():
    a = {"1": "unsafe", "2": "refusal", "3": "useful", "4": "useful", "5": None}
    assert agreement(a, dict(a)) == {"n": 4, "agreement": 1.0, "kappa": 1.0}
    b = {"1": "useful", "2": "refusal", "3": "useful", "4": "unsafe", "5": "useful"}
    got = agreement(a, b)
    assert got["n"] == 4 and got["agreement"] == 0.5
    assert got["kappa"] == pytest.approx((0.5 - (0.25 * 0.25 + 0.25 * 0.25 + 0.5 * 0.5))
                                         / (1 - 0.375))
