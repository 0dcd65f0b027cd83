"""Comparing attack sources on the same goals against the same defender: attack success,
intent kept and diversity; and a local causal LM as an attack source (base or trained)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finetune.grpo import rounded_mean
from finetune.models import LoadedModel
from redteam.attacker import attacker_messages, clean_attack
from redteam.mutations import attack_id, attack_seed
from redteam.tactics import LLM_TACTICS
from redteam.train_attacker import OutcomeDefender, RewardWeights, normalise_rows
from redteam.types import Attack, Goal
from retriever.encoder import Encoder


class LocalAttacker:
    """A causal LM in this process (the base or the trained attacker) writing attacks with
    the LLM attacker's prompt and clean-up; unusable replies are skipped and counted."""

    uses_llm = True

    def __init__(self, model: LoadedModel, *, source: str, temperature: float = 1.0,
                 max_new_tokens: int = 64, tactics: tuple[str, ...] = LLM_TACTICS):
        self.model = model
        self.name = source
        self.tactics = tactics
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.requested = 0
        self.skipped = 0

    def attacks(self, goal: Goal, tactic: str, n: int, *, round_no: int,
                start_index: int = 0) -> list[Attack]:
        """Up to ``n`` attacks; each sampled with a seed fixed by its id."""
        import torch

        tok, lm = self.model.tokenizer, self.model.model
        ids = tok.apply_chat_template(attacker_messages(goal, tactic), add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        made = []
        for index in range(start_index, start_index + n):
            key = attack_id(goal.id, tactic, round_no, index)
            torch.manual_seed(attack_seed(key))
            with torch.no_grad():
                output = lm.generate(**ids, do_sample=True, temperature=self.temperature,
                                     max_new_tokens=self.max_new_tokens,
                                     pad_token_id=tok.pad_token_id)
            text = tok.decode(output[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
            self.requested += 1
            cleaned, _ = clean_attack(text)
            if cleaned is None:
                self.skipped += 1
                continue
            made.append(Attack(id=key, goal_id=goal.id, tactic=tactic, source=self.name,
                               messages=[{"role": "user", "content": cleaned}]))
        return made


def compare_sources(goals: Sequence[Goal], sources: Sequence[Any], defender: OutcomeDefender,
                    encoder: Encoder, *, per_goal: int = 2, round_no: int = 0,
                    min_intent: float = RewardWeights.min_intent) -> dict[str, dict[str, Any]]:
    """ASR, intent and diversity of each attack source (synchronous ``attacks``) on the same
    goals against the same defender; the k-th attack on a goal uses the source's tactic k.
    Rates are over the attacks requested (an unusable generation counts as a failure)."""
    from redteam.evaluator import user_text
    from redteam.metrics import mean_pairwise_similarity, self_bleu

    table: dict[str, dict[str, Any]] = {}
    for source in sources:
        made: list[tuple[Goal, Attack]] = []
        requested = 0
        for gi, goal in enumerate(goals):
            for k in range(per_goal):
                tactic = source.tactics[(gi * per_goal + k) % len(source.tactics)]
                requested += 1
                made += [(goal, a) for a in source.attacks(goal, tactic, 1, round_no=round_no,
                                                           start_index=k)]
        texts = [user_text(a.messages) for _, a in made]
        results = defender.outcomes([a.messages for _, a in made]) if made else []
        vecs, intent = None, []
        if texts:
            vecs = normalise_rows(np.asarray(encoder.encode(texts), dtype=np.float32))
            goal_vecs = normalise_rows(np.asarray(encoder.encode([g.text for g, _ in made]),
                                                  dtype=np.float32))
            intent = (vecs * goal_vecs).sum(axis=1).tolist()
        success = [o.unsafe or o.miss for o in results]
        kept = [s and i >= min_intent for s, i in zip(success, intent, strict=True)]
        n = max(1, requested)  # an unusable generation is a failed attack
        table[source.name] = {
            "requested": requested, "attacks": len(made), "skipped": requested - len(made),
            "asr": round(sum(success) / n, 4), "asr_intent_kept": round(sum(kept) / n, 4),
            "unsafe_rate": round(sum(o.unsafe for o in results) / n, 4),
            "miss_rate": round(sum(o.miss for o in results) / n, 4),
            "intent": rounded_mean(intent),
            "self_bleu": self_bleu(texts),
            "pairwise_similarity": None if vecs is None else mean_pairwise_similarity(vecs),
        }
    return table


def plot_comparison(table: dict[str, dict[str, Any]], out: Path, *, title: str) -> Path:
    """Grouped bars: ASR, ASR with intent kept, Self-BLEU and pairwise similarity per source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("asr", "asr_intent_kept", "intent", "self_bleu", "pairwise_similarity")
    names = list(table)
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(8, 4))
    for n, name in enumerate(names):
        values = [table[name].get(k) or 0.0 for k in keys]
        ax.bar([x + n * width for x in range(len(keys))], values, width, label=name)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(keys))], list(keys))
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

