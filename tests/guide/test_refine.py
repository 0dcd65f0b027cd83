"""The refinement contract: the refiner's prompt, the rule that accepts its output, the mode
order of the options contract, and the guide step viewing a refined conversation."""

from __future__ import annotations

import pytest

from guide.options import GuideOptions, Policy, apply_options
from guide.refine import (
    OUTCOMES,
    REFINE_MODES,
    check_refined,
    clean_refined,
    latest_user_index,
    refiner_messages,
)
from guide.step import guide_batch
from tests.guiding import TEST_POLICY

CONVERSATION = [
    {"role": "system", "content": "You are the help desk of a bakery."},
    {"role": "user", "content": "We sell sourdough and rye."},
    {"role": "assistant", "content": "Noted, what would you like to do?"},
    {"role": "user", "content": "write the shop sign, 10 words max"},
]


def test_the_prompt_has_the_instruction_earlier_turns_and_the_latest_turn_last():
    msgs = refiner_messages(CONVERSATION)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "Output only the rewritten request" in msgs[0]["content"]
    user = msgs[1]["content"]
    assert user.endswith("write the shop sign, 10 words max")
    assert "User: We sell sourdough and rye." in user
    assert "Assistant: Noted, what would you like to do?" in user
    assert "bakery" not in user  # the operator's system message is not the refiner's business


def test_a_single_turn_prompt_is_the_request_itself_and_long_context_is_clipped():
    assert refiner_messages([{"role": "user", "content": "hi there"}])[1]["content"] == \
        "hi there"
    long_history = [{"role": "user", "content": f"turn {n} " + "x" * 2000} for n in range(10)]
    msgs = refiner_messages([*long_history, {"role": "user", "content": "and now?"}])
    assert len(msgs[1]["content"]) < 2000
    assert "turn 9" in msgs[1]["content"] and "turn 0" not in msgs[1]["content"]


def test_typed_text_parts_and_role_spelling_are_read():
    conv = [{"role": " User", "content": [{"type": "text", "text": "summarise this"}]},
            {"role": "assistant", "content": "sure"}]
    assert latest_user_index(conv) == 0
    assert refiner_messages(conv)[1]["content"] == "summarise this"
    with pytest.raises(ValueError):
        refiner_messages([{"role": "system", "content": "only a system message"}])


@pytest.mark.parametrize(("original", "refined", "outcome"), [
    ("how do i stop a hung process", "  \n", "empty"),
    ("how do i stop a hung process", "I'm sorry, but I can't help with that.", "refusal"),
    ("how do i stop a hung process", "As an AI language model, I cannot do that.", "refusal"),
    ("¿cómo paro un proceso colgado?", "Lo siento, no puedo ayudar con eso.", "refusal"),
    ("how do i stop a hung process on my laptop",
     "¿Cómo puedo detener un proceso que no responde en mi portátil?", "language"),
    ("wie kann ich einen Prozess beenden, der hängt?",
     "How can I end a process that is stuck on my computer?", "language"),
    ("как остановить зависший процесс", "How do I stop a process that hangs?", "language"),
    ("hi", "Привет", "language"),
    ("How do I stop a hung process?", "how do i stop a hung process", "unchanged"),
    ("stop process", "x" * 400, "length"),
    # an answer to the request instead of a rewrite of it
    ("how do i stop a hung process on linux",
     "To stop a hung process on Linux, you can run kill -9 with its id.", "answer"),
    ("ideas for a quick dinner", "Here are 5 quick dinner ideas: pasta, soup, tacos.", "answer"),
    ("write me a poem about my cat, 4 lines",
     "Soft paws at dawn,\nA purr by the door,\nA nap in the sun,\nMy cat wants more.",
     "answer"),
    ("hello, what is your name", "I'm glad you're here. My name is Alex.", "answer"),
    ("hello, what is your name", "Hello, could you tell me your name?", "refined"),
    ("steps to reset my router", "1. Unplug it\n2. Wait ten seconds\n3. Plug it back in",
     "answer"),
    # structure and a "Here is" of the user's own are a rewrite, not an answer
    ("write the shop sign, 10 words max",
     "Write a sign for our bakery in 10 words or fewer.\n- mention sourdough\n- be friendly",
     "refined"),
    ("fix this: x=[1,2", "Here is my Python code: x = [1, 2. Please fix the syntax error.",
     "refined"),
    ("how do i stop a hung process",
     "How do I safely stop a process that hangs on Linux, step by step?", "refined"),
    ("¿cómo paro un proceso colgado?",
     "¿Cómo puedo detener de forma segura un proceso que no responde en Linux?", "refined"),
    # the user's own apology is not a refusal; short or code-like text is not judged on language
    ("I'm sorry to ask, how do I stop a process?",
     "I'm sorry to ask: how do I stop a stuck process on Linux?", "refined"),
    ("ok", "Okay, continue with the previous task.", "refined"),
    ("fix: for i in range(3) print(i)", "Fix this Python loop: for i in range(3): print(i)",
     "refined"),
])
def test_check_refined_names_the_outcome(original, refined, outcome):
    assert check_refined(original, refined) == outcome
    assert outcome in OUTCOMES


def test_clean_refined_strips_labels_and_quotes():
    assert clean_refined('  "Rewritten request: How do I stop it?"  ') == "How do I stop it?"
    assert clean_refined("Refined prompt: 'list three fruits'") == "list three fruits"
    assert clean_refined("Sure, here is the rewritten request:\nName three fruits.") == \
        "Name three fruits."
    assert clean_refined("What is a prompt: explain it") == "What is a prompt: explain it"


def test_a_request_may_only_tighten_the_refine_mode():
    assert REFINE_MODES == ("off", "retrieve", "auto", "rewrite")
    for n, current in enumerate(REFINE_MODES):
        for m, asked in enumerate(REFINE_MODES):
            applied = apply_options(Policy(refine=current), GuideOptions(refine=asked))
            assert applied.policy.refine == (asked if m >= n else current)
            assert ("refine" in applied.ignored) == (m < n)
    loosened = apply_options(Policy(refine="rewrite"), GuideOptions(refine="off"),
                             allow_loosen=True)
    assert loosened.policy.refine == "off"


def test_the_guide_step_views_the_query_and_forwards_the_conversation(small_retriever):
    vague = [{"role": "system", "content": "be brief"},
             {"role": "user", "content": "that thing is stuck again, help"}]
    refined = [vague[0], {"role": "user", "content": "how do i kill a python process that "
                                                     "hangs on linux"}]
    plain, viewed = guide_batch([vague, vague], small_retriever, [TEST_POLICY, TEST_POLICY],
                                queries=[None, refined])
    assert "how do i kill a python process that hangs on linux" in viewed.views
    assert "that thing is stuck again, help" not in viewed.views
    assert "quality_coding" in {h.category for h in viewed.hits}
    assert {h.id for h in viewed.hits} != {h.id for h in plain.hits}
    # the forwarded conversation is the client's, with the block of the refined retrieval
    assert viewed.messages[-1] == vague[-1]
    assert viewed.messages[0]["content"].startswith("be brief")
    assert "Process management is routine" in viewed.messages[0]["content"]
