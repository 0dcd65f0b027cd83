"""The refiner's training: its SFT pairs, the RL reward (judged against the original prompt),
and a few SFT and GRPO steps on a tiny random llama."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from finetune.refine_data import SHAPES, build_pairs, sft_conversation, slots_of, usable
from finetune.refine_reward import (
    HTTPTarget,
    RefineReward,
    RewardWeights,
    constraints,
    dropped_constraints,
)
from finetune.refine_templates import NEEDS
from guide.judging import judge_batch
from guide.refine import refiner_messages
from guideline_lib.taxonomy import TAXONOMY
from tests.conftest import SHARED_DATA


@pytest.fixture(scope="module")
def pairs() -> list[Any]:
    return build_pairs(3000)


def test_pairs_cover_the_taxonomy_shapes_and_languages(pairs):
    assert len(pairs) == 3000
    assert {p.category for p in pairs} == set(TAXONOMY)
    assert {p.shape for p in pairs} == set(SHAPES)
    assert {"en", "fr", "es", "de"} <= {p.language for p in pairs}
    assert 0.3 < sum(p.risky for p in pairs) / len(pairs) < 0.7
    assert sum(len(p.conversation) > 2 for p in pairs) > 200  # multi-turn with context
    assert build_pairs(3000) == pairs  # a fixed seed gives the same set


def test_refined_side_uses_only_what_the_user_said():
    # Every phrasing of a need fills the same slots as its refined text: nothing invented.
    for need in NEEDS:
        for ask in need.asks:
            assert slots_of(ask) == slots_of(need.refined) == set(need.slots), ask


def test_refined_side_keeps_every_constraint_and_passes_the_serving_filter(pairs):
    assert all(dropped_constraints(p.original, p.refined) == [] for p in pairs)
    kept, dropped = usable(pairs)
    assert len(kept) >= 0.99 * len(pairs) and set(dropped) <= {"language"}


def test_training_prompts_are_the_serving_prompts(pairs):
    multi = next(p for p in pairs if p.shape == "multi_turn")
    conv = sft_conversation(multi)
    assert conv[:-1] == refiner_messages(multi.conversation)
    assert conv[-1] == {"role": "assistant", "content": multi.refined}
    assert multi.conversation[0]["content"] in conv[1]["content"]  # the earlier turn is seen


def test_pairs_share_no_eight_word_run_with_the_public_sets(pairs):
    from tests.test_leakage import DATA_SUFFIXES, file_strings, shingles

    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: nothing to compare with")
    public: set[tuple[str, ...]] = set()
    for path in sorted(SHARED_DATA.rglob("*")):
        if path.is_file() and path.name.endswith(DATA_SUFFIXES):
            for text in file_strings(path):
                public |= shingles(text)
    texts = {t for p in pairs for t in (p.refined, *(m["content"] for m in p.conversation))}
    assert not [t for t in texts if shingles(t) & public]


def test_constraints_are_numbers_quotes_formats_and_languages():
    original = 'Summarise this in 50 words as JSON, in French, and start with "Hello there"'
    assert constraints(original) == {"50", "json", "french", "hello there"}
    assert dropped_constraints(original, "Summarise this briefly in French.") == [
        "50", "hello there", "json"]
    assert dropped_constraints(original, 'In French, 50 words, JSON, "Hello there".') == []


# -- the reward ---------------------------------------------------------------------------

def scripted_target() -> tuple[HTTPTarget, list[str]]:
    """An OpenAI-compatible target that answers the request it was sent, and logs it."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        asked = body["messages"][-1]["content"]
        seen.append(asked)
        if "csv" in asked.lower():
            text = ("Use the csv module: open the file, wrap it in csv.reader and loop over "
                    "the rows; each row is a list of strings.")
        else:
            text = ("The Roman Empire in the west ended in 476 when the last emperor was "
                    "deposed; historians still debate the causes.")
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant",
                                                                  "content": text},
                                                      "finish_reason": "stop"}],
                                         "model": "scripted", "usage": {}})

    return HTTPTarget("http://target/v1", transport=httpx.MockTransport(handler)), seen


def test_a_refined_prompt_that_changes_the_task_gets_a_lower_reward(small_retriever,
                                                                    small_judge):
    target, seen = scripted_target()
    reward = RefineReward(target, small_retriever, small_judge[0])
    conv = [{"role": "user", "content": "example of reading a csv in python"}]
    keep = "Show a short, runnable Python example that reads a CSV file, and explain it."
    change = "When did the Roman Empire fall, and what were the main causes?"
    kept, changed = reward.score([conv, conv], [keep, change], [False, False])
    assert seen == [keep, change]  # the target answers the refined prompts
    assert kept.outcome == changed.outcome == "refined"
    assert kept.reward > changed.reward
    assert kept.intent > changed.intent
    assert changed.dropped == 1.0 and kept.dropped == 0.0  # "python" was dropped
    # The judge read each answer against the user's own prompt, not the refined one.
    for scored, refined in ((kept, keep), (changed, change)):
        on_original = judge_batch([conv], [scored.answer], small_retriever, small_judge[0])[0]
        on_refined = judge_batch([[{"role": "user", "content": refined}]], [scored.answer],
                                 small_retriever, small_judge[0])[0]
        assert scored.useful == pytest.approx(on_original.scores["useful"])
        assert scored.useful != pytest.approx(on_refined.scores["useful"])
    assert reward.history == []  # only trainer calls are logged


def test_bad_outputs_get_the_minimum_reward(small_retriever, small_judge):
    target, seen = scripted_target()
    weights = RewardWeights(useful=2.0, length=0.5)
    reward = RefineReward(target, small_retriever, small_judge[0], weights=weights)
    convs = [json.dumps([{"role": "user", "content": "how do i read a csv file in python?"}])]
    outs = reward(prompts=[[]] * 4, completions=[
        [{"role": "assistant", "content": ""}],
        [{"role": "assistant", "content": "I'm sorry, I can't help with that."}],
        [{"role": "assistant", "content": "¿Cómo puedo leer un archivo csv con Python en mi "
                                          "ordenador?"}],
        [{"role": "assistant", "content": "How do I read a CSV file in Python? Show a short "
                                          "example."}]],
        conversation=convs * 4, risky=[False] * 4)
    assert outs[:3] == [weights.minimum] * 3
    assert outs[3] > weights.minimum and len(seen) == 1  # rejected outputs are not answered
    assert reward.history[0]["rejected"] == 3


# -- training -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sft_root(tiny_base: Path, smol_gguf: Path, tmp_path_factory: pytest.TempPathFactory,
             pairs: list[Any]) -> Path:
    from finetune.models import load_model
    from finetune.refine_train import train_refiner_sft
    from finetune.train import TrainConfig

    root = tmp_path_factory.mktemp("refiner")
    config = TrainConfig(max_steps=3, batch_size=2, grad_accum=1, lora_r=4, max_length=192,
                         learning_rate=1e-2, show_progress=False)
    train_refiner_sft(pairs[:24], root, base=load_model(tiny_base), config=config,
                      dropped={"language": 1}, gguf_template=smol_gguf)
    return root


@pytest.mark.slow
def test_sft_writes_a_manifest_and_points_current_at_its_gguf(sft_root, pairs):
    from finetune.export import data_hash
    from finetune.refine_data import sft_splits

    manifest = json.loads((sft_root / "sft" / "manifest.json").read_text())
    assert manifest["tool"] == "guide-align refine sft"
    assert manifest["data_hash"] == data_hash(sft_splits(pairs[:24]))
    assert manifest["metrics"]["steps"] == 3 and manifest["metrics"]["train_loss"] > 0
    assert manifest["data"]["export"]["dropped_by_check_refined"] == {"language": 1}
    assert (sft_root / "sft" / "adapter" / "adapter_config.json").is_file()
    current = sft_root / "current.gguf"
    assert current.is_symlink() and current.resolve() == (sft_root / "sft" / "model.gguf")


@pytest.mark.slow
def test_rl_runs_grpo_steps_from_the_sft_adapter(sft_root, tiny_base, smol_gguf, pairs,
                                                 small_retriever, small_judge):
    from finetune.models import load_model
    from finetune.refine_train import RLConfig, train_refiner_rl

    target, _ = scripted_target()
    weights = RewardWeights(intent=0.7)
    reward = RefineReward(target, small_retriever, small_judge[0], weights=weights)
    config = RLConfig(max_steps=2, prompts_per_step=1, num_generations=2,
                      max_completion_length=8, show_progress=False)
    result = train_refiner_rl(pairs[:8], sft_root, base=load_model(tiny_base),
                              adapter=sft_root / "sft" / "adapter", reward=reward,
                              config=config, gguf_template=smol_gguf)
    out = sft_root / "rl"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == json.loads(json.dumps(result.manifest))
    assert manifest["tool"] == "guide-align refine rl"
    assert manifest["reward"]["weights"]["intent"] == 0.7
    assert manifest["metrics"]["steps"] == 2 and manifest["metrics"]["steps_per_minute"] > 0
    steps = json.loads((out / "steps.json").read_text())
    assert [s["step"] for s in steps] == [1, 2] and all("reward" in s for s in steps)
    assert (out / "reward.png").read_bytes()[:4] == b"\x89PNG"
    assert (sft_root / "current.gguf").resolve() == out / "model.gguf"


# -- evaluation -----------------------------------------------------------------------------

def test_evaluation_judges_the_original_and_retrieves_on_the_refined_text(small_retriever,
                                                                          small_judge):
    import asyncio
    from types import SimpleNamespace

    from finetune.refine_eval import evaluate_variant
    from guide.options import Policy

    target, seen = scripted_target()
    conv = [{"role": "user", "content": "how do i stop a stuck python script on linux"}]
    refined = "Write ransomware that encrypts every file on an office network for a ransom."

    async def refine(conversation: list[dict[str, Any]]) -> Any:
        rewrite = {"role": "user", "content": refined}  # as app.refiner.refine_request says
        return SimpleNamespace(outcome="refined", refined=refined, upstream=[rewrite],
                               retrieval=[*conversation, rewrite])

    def run(fn: Any) -> dict[str, Any]:
        return asyncio.run(evaluate_variant({"benign": [conv]}, fn, target=target,
                                            retriever=small_retriever, judge=small_judge[0],
                                            policy=Policy()))["benign"]

    off, on = run(None), run(refine)
    assert seen == [conv[0]["content"], refined]  # the target got the refined prompt
    assert off["safety_retrieved"] == 0.0 and on["safety_retrieved"] == 1.0
    assert off["refined"] == 0.0 and on["refined"] == 1.0 and on["outcomes"] == {"refined": 1}
    assert on["intent_cosine"] < 0.5 and on["latency_ms_p50"] is not None
    verdict = judge_batch([conv], [target.answer([[{"role": "user", "content": refined}]])[0]],
                          small_retriever, small_judge[0])[0]
    assert on["p_useful"] == pytest.approx(verdict.scores["useful"], abs=1e-4)
