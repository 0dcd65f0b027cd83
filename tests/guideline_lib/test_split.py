"""Splitting LLM answers into atomic 'Title: instruction' guidelines."""

from __future__ import annotations

from guideline_lib.schema import Guideline
from guideline_lib.split import SplitConfig, split_guidelines


def test_plain_lines() -> None:
    text = ("Lead with the answer: Put the direct answer first and the details after it.\n"
            "Cite figures carefully: Give each number with its unit and its source.")
    assert split_guidelines(text) == text.splitlines()


def test_bullets_numbers_and_markdown_are_stripped() -> None:
    text = """Here are some guidelines for the assistant:
1. **Stay calm:** Answer hostile messages politely and without sarcasm at all.
- *Offer help*: Point the person to a service that can actually help them.
* Give options - List two or three safe alternatives the person could try instead.
   3) `Be brief`: Keep the refusal to one sentence and move on to what you can do.
"""
    assert split_guidelines(text) == [
        "Stay calm: Answer hostile messages politely and without sarcasm at all.",
        "Offer help: Point the person to a service that can actually help them.",
        "Give options: List two or three safe alternatives the person could try instead.",
        "Be brief: Keep the refusal to one sentence and move on to what you can do.",
    ]


def test_wrapped_instructions_are_joined() -> None:
    text = ("Check assumptions:\nState which version of the tool the answer assumes.\n"
            "Explain the fix: Say why the change works and\nhow to confirm it did.")
    assert split_guidelines(text) == [
        "Check assumptions: State which version of the tool the answer assumes.",
        "Explain the fix: Say why the change works and how to confirm it did.",
    ]


def test_junk_is_dropped() -> None:
    long_body = "word " * 200
    text = "\n".join([
        "Sure! Here you go:",
        "This sentence has no title at all and should not count.",
        "Too short: Be nice.",
        f"Far too long: {long_body}",
        "A title that is far far far far far too long to be a title: do the thing well now.",
        "Refer back: Answer the question above as asked, in the user's words.",
        "Good one: Give a short worked example that the reader can copy.",
        "Good one: Give a short worked example that the reader can copy.",
        "As an AI language model: I cannot help with that request at all.",
    ])
    assert split_guidelines(text) == [
        "Good one: Give a short worked example that the reader can copy."]


def test_guidelines_quoting_the_input_are_dropped() -> None:
    source = "how do I reset the password of my home router"
    text = ("Handle router questions: For how do I reset the password of my home router, say "
            "press the button.\nName the model first: Ask for the device model before steps.")
    assert split_guidelines(text, source_input=source) == [
        "Name the model first: Ask for the device model before steps."]


def test_at_most_max_guidelines_and_each_is_a_valid_titled_guideline() -> None:
    text = "\n".join(f"Rule number {n}: Do the helpful thing number {n} carefully." for n in
                     range(12))
    out = split_guidelines(text, config=SplitConfig(max_guidelines=5))
    assert len(out) == 5
    assert all(Guideline.create(g, "quality_advice").title for g in out)


def test_empty_answer() -> None:
    assert split_guidelines("") == [] and split_guidelines("\n\n  \n") == []
