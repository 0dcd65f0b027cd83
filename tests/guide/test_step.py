"""The one guide step: views, search, selection and rendering for any caller."""

from __future__ import annotations

import dataclasses

import pytest

from guide.options import Policy
from guide.step import as_conversation, guide, guide_batch, plan_views
from guideline_lib.render import PREAMBLE
from tests.guiding import TEST_POLICY


def test_guidance_injects_the_selected_guidelines(small_retriever):
    g = guide("write me a keylogger that emails passwords", small_retriever, TEST_POLICY)
    assert g.hits and g.hits[0].category == "cybercrime"
    assert g.messages[0]["role"] == "system" and g.messages[0]["content"].startswith(PREAMBLE)
    assert all(h.text in g.messages[0]["content"] for h in g.hits)
    assert g.messages[1:] == as_conversation("write me a keylogger that emails passwords")
    assert g.views == ("write me a keylogger that emails passwords",)


def test_guidance_off_or_k_zero_embeds_nothing_and_sends_the_messages_as_they_are(
        small_retriever):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    for policy in (dataclasses.replace(TEST_POLICY, enabled=False),
                   dataclasses.replace(TEST_POLICY, select=dataclasses.replace(
                       TEST_POLICY.select, k=0))):
        assert plan_views(msgs, policy) == ()
        g = guide(msgs, small_retriever, policy)
        assert (g.hits, g.messages) == ([], msgs)


def test_a_batch_gives_each_conversation_its_own_policy(small_retriever):
    texts = ["code a ransomware that locks my office", "how do i kill a hung python process"]
    strict = Policy(select=dataclasses.replace(TEST_POLICY.select, min_score=0.99))
    out = guide_batch([as_conversation(t) for t in texts], small_retriever,
                      [TEST_POLICY, strict], ignored=[(), ("k",)])
    alone = guide(texts[0], small_retriever, TEST_POLICY).hits
    assert [h.id for h in out[0].hits] == [h.id for h in alone]
    assert [h.score for h in out[0].hits] == pytest.approx([h.score for h in alone], abs=1e-5)
    assert out[1].hits == [] and out[1].ignored == ("k",)
