"""GGUF export: llama.cpp computes the same logits as transformers on the exported model."""

from __future__ import annotations

import numpy as np
import pytest

from finetune.models import load_model
from finetune.serve import GGUFExportError, export_gguf


@pytest.mark.e2e
def test_llama_cpp_reproduces_the_transformers_logits(tiny_base, smol_gguf, tmp_path):
    import torch
    from llama_cpp import Llama

    loaded = load_model(tiny_base)
    with torch.no_grad():  # make the random model less trivial than its init
        for p in loaded.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    out = export_gguf(loaded.model, tmp_path / "tiny.gguf", template=smol_gguf, name="tiny",
                      f16=False)
    text = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    llm = Llama(model_path=str(out), n_ctx=128, logits_all=True, verbose=False, n_threads=1)
    try:
        assert list(llm.tokenize(text.encode(), add_bos=False, special=True)) == ids
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)])
        assert llm.metadata["tokenizer.chat_template"].startswith("{% for message in messages")
    finally:
        llm.close()
    with torch.no_grad():
        want = loaded.model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(got - want).max() < 1e-2
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_a_template_with_another_vocabulary_is_refused(tmp_path, smol_gguf):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2))
    with pytest.raises(GGUFExportError, match="tokens"):
        export_gguf(model, tmp_path / "x.gguf", template=smol_gguf, name="x")
    assert not (tmp_path / "x.gguf").exists()

