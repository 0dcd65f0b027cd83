"""Assistant-only labels under the base model's own chat template."""

from __future__ import annotations

import pytest

from finetune.chat import IGNORE, TemplateError, encode_conversation, encode_prompt


@pytest.fixture(scope="module")
def tokenizer(tiny_base):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_base))


def test_only_assistant_tokens_carry_labels(tokenizer):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "How far is the moon?"},
                {"role": "assistant", "content": "About 384,400 km on average."}]
    enc = encode_conversation(tokenizer, messages)
    assert len(enc.labels) == len(enc.input_ids)
    trained = [t for t, label in zip(enc.input_ids, enc.labels, strict=True) if label != IGNORE]
    assert all(label in (IGNORE, t) for t, label in zip(enc.input_ids, enc.labels, strict=True))
    # The answer and the end-of-turn marker are learned; system, user and headers are not.
    assert tokenizer.decode(trained) == "About 384,400 km on average.<|im_end|>\n"
    prompt = encode_prompt(tokenizer, messages[:2])
    assert enc.input_ids[: len(prompt)] == prompt
    assert all(label == IGNORE for label in enc.labels[: len(prompt)])


def test_every_assistant_turn_is_learned_in_a_multi_turn_conversation(tokenizer):
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "and the sun?"},
                {"role": "assistant", "content": "About 150 million km."}]
    enc = encode_conversation(tokenizer, messages)
    spans, current = [], []
    for t, label in zip(enc.input_ids, enc.labels, strict=True):
        if label != IGNORE:
            current.append(t)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    spans += [tokenizer.decode(current)] if current else []
    assert spans == ["Hello!<|im_end|>\n", "About 150 million km.<|im_end|>\n"]


def test_truncation_keeps_the_start(tokenizer):
    messages = [{"role": "user", "content": "count"},
                {"role": "assistant", "content": " ".join(str(n) for n in range(200))}]
    full = encode_conversation(tokenizer, messages)
    cut = encode_conversation(tokenizer, messages, max_length=40)
    assert cut.input_ids == full.input_ids[:40] and cut.labels == full.labels[:40]


def test_a_tokenizer_without_chat_template_is_an_error():
    from transformers import AutoTokenizer

    from guideline_lib.embedded import base_model_path

    tok = AutoTokenizer.from_pretrained(str(base_model_path()))
    tok.chat_template = None
    with pytest.raises(TemplateError):
        encode_conversation(tok, [{"role": "user", "content": "x"},
                                  {"role": "assistant", "content": "y"}])
