"""LoRA SFT on a tiny random llama: assistant-only labels in real batches, saved artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.chat import IGNORE
from finetune.export import ExportConfig, build_sft, data_hash, export_manifest
from finetune.models import load_model
from finetune.train import TrainConfig, build_trainer, train_sft
from tests.fakes.sft_records import record

FAST = TrainConfig(epochs=3, learning_rate=1e-2, batch_size=4, grad_accum=1, lora_r=8,
                   show_progress=False)


def conversations(n: int) -> list[list[dict[str, str]]]:
    out = []
    for i in range(n):
        system = [{"role": "system", "content": "Be brief."}] if i % 2 else []
        out.append([*system, {"role": "user", "content": f"question {i}: " + "why? " * (i % 5)},
                    {"role": "assistant", "content": f"Short answer number {i}."}])
    return out


def test_trainer_batches_learn_only_assistant_tokens(tiny_base, tmp_path):
    loaded = load_model(tiny_base)
    tok = loaded.tokenizer
    trainer = build_trainer(loaded, {"train": conversations(8), "validation": []},
                            config=FAST, work_dir=tmp_path)
    seen = []
    for batch in trainer.get_train_dataloader():
        for ids, labels, mask in zip(batch["input_ids"].tolist(), batch["labels"].tolist(),
                                     batch["attention_mask"].tolist(), strict=True):
            learned = [t for t, label in zip(ids, labels, strict=True) if label != IGNORE]
            assert all(label in (IGNORE, t) for t, label in zip(ids, labels, strict=True))
            assert all(label == IGNORE for label, m in zip(labels, mask, strict=True) if not m)
            text = tok.decode(learned)
            assert text.startswith("Short answer number ") and text.endswith(".<|im_end|>\n")
            assert "question" not in text and "Be brief" not in text and "user" not in text
            seen.append(text)
    assert len(seen) == 8


@pytest.mark.slow
def test_training_saves_adapter_merged_model_gguf_and_manifest(tiny_base, tmp_path, smol_gguf):
    import torch
    from peft import PeftModel

    records = [record(f"k{i}", f"question {i}", "I can't help with that, here is a safer idea.")
               for i in range(20)]
    config = ExportConfig(validation=0.2)
    sft = build_sft(records, config=config)
    export = export_manifest(sft, config=config, run={"library": {}, "llm": {}})
    splits = {k: [e.messages for e in v] for k, v in sft.splits().items()}
    out = tmp_path / "tuned"
    result = train_sft(splits, out, base=load_model(tiny_base), config=FAST, data=export,
                       gguf_template=smol_gguf)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == json.loads(json.dumps(result.manifest))
    assert manifest["data"]["hash"] == export["data_hash"] == data_hash(splits)
    assert manifest["data"]["train"] == 16 and manifest["data"]["validation"] == 4
    assert manifest["hyperparameters"]["lora_r"] == 8 and manifest["base"]["path"] == str(tiny_base)
    m = manifest["metrics"]
    assert m["steps"] == 12 and m["train_examples"] == 16
    assert m["eval_loss_after"] < m["eval_loss_before"]  # it learned the held-out answers' style
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "model.gguf").is_file() and manifest["artifacts"]["gguf"] == "model.gguf"
    # The merged model is the base plus the adapter.
    merged = load_model(out)  # a tuned directory loads its merged model
    base = load_model(tiny_base)
    with_adapter = PeftModel.from_pretrained(base.model, str(out / "adapter")).eval()
    ids = torch.tensor([merged.tokenizer("<|im_start|>user\nhello<|im_end|>\n")["input_ids"]])
    with torch.no_grad():
        a, b = merged.model(ids).logits, with_adapter(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)


def test_training_needs_assistant_tokens(tiny_base, tmp_path):
    with pytest.raises(ValueError, match="assistant"):
        train_sft({"train": [[{"role": "user", "content": "only a question"}]],
                   "validation": []}, tmp_path / "x", base=load_model(tiny_base), config=FAST)
    assert not Path(tmp_path / "x").exists()
