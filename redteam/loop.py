"""The red-team loop: attack the defender, judge, record, repair, reload; round after round.

Everything lands in one journal (``guideline_lib.journal.Journal``) under the run directory,
one record per key, fsynced as it is made:

- ``gen:R:<attack id>``  an LLM-written attack (so a rerun does not ask the attacker again);
- ``attack:R:<attack id>``  the attack, the answer, guidelines injected, risk, gate, verdict;
- ``benign:R:<set>:<key>``  what a benign prompt got (over-triggering);
- ``round:R``  the round's figures and budgets; ``repair:R``  the new artifacts after round R.

A run killed at any point (even ``kill -9``) and started again with the same command skips
every key already recorded, so nothing is lost or asked twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from guideline_lib.batch import run_batch
from guideline_lib.journal import Journal
from redteam.evaluator import Artifacts, Defender, outcome, user_text
from redteam.metrics import round_metrics
from redteam.repair import RepairInput, RepairResult
from redteam.types import Attack, Goal
from retriever.encoder import Encoder

JOURNAL = "journal.jsonl"
Log = Callable[[str], None]


class TimeUp(Exception):
    """The round's time budget is spent: no more attacks are sent this round."""


class AttackSource(Protocol):
    """Turns a goal into attacks with a tactic (programmatic mutations or an LLM)."""

    name: str
    tactics: tuple[str, ...]
    uses_llm: bool

    def attacks(self, goal: Goal, tactic: str, n: int, *, round_no: int,
                start_index: int) -> Any: ...


class Repairer(Protocol):
    def __call__(self, current: Artifacts, inputs: Sequence[RepairInput],
                 round_no: int) -> RepairResult: ...


@dataclass(frozen=True)
class BenignPrompt:
    """A benign prompt the gateway should not treat as harmful."""

    set: str
    key: str
    messages: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class LoopConfig:
    """Rounds, attacks per goal, budgets (0: no limit) and the hold-out of tactics."""

    rounds: int = 3
    per_goal: int = 1
    max_attacks: int = 0  # attacks sent per round
    max_llm_calls: int = 0  # attacker and builder calls per round
    max_minutes_per_round: float = 0.0  # for sending attacks; the repair runs after
    max_repair_inputs: int = 12
    holdout_tactics: tuple[str, ...] = ()
    concurrency: int = 1
    show_progress: bool = True


def interleave(goals: Sequence[Goal]) -> list[Goal]:
    """Goals taken one category at a time, repair and held-out goals first in alternate
    categories, so a capped round still covers categories and both kinds of goal evenly."""
    by_cat: dict[str, list[Goal]] = defaultdict(list)
    for g in goals:
        by_cat[g.category].append(g)
    queues = [sorted(q, key=lambda g: g.holdout != bool(n % 2))
              for n, q in enumerate(by_cat.values())]
    out: list[Goal] = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def plan_round(goals: Sequence[Goal], sources: Sequence[AttackSource], per_goal: int,
               round_no: int) -> list[tuple[Goal, AttackSource, str, int]]:
    """(goal, source, tactic, index) of every attack of a round: tactics spread over the goals
    and shifted every round, attacks ordered index-major so a cap cuts evenly."""
    pairs = [(s, t) for s in sources for t in s.tactics]
    if not pairs:
        raise ValueError("no tactics to attack with")
    order = interleave(goals)
    plan = []
    for j in range(per_goal):
        for gi, goal in enumerate(order):
            src, tactic = pairs[(gi * per_goal + j + (round_no - 1) * 5) % len(pairs)]
            plan.append((goal, src, tactic, j))
    return plan


async def _call(source: AttackSource, goal: Goal, tactic: str, *, round_no: int,
                index: int) -> Attack:
    result = source.attacks(goal, tactic, 1, round_no=round_no, start_index=index)
    if inspect.isawaitable(result):
        result = await result
    attacks = list(result)
    if not attacks:
        raise ValueError(f"{source.name} made no attack for {goal.id} with {tactic}")
    return attacks[0]


def _attack_dict(a: Attack) -> dict[str, Any]:
    return dataclasses.asdict(a)


class MutationSource:
    """The no-model mutations of ``redteam.mutations``, seeded per goal, round and index."""

    name = "mutation"
    uses_llm = False

    def __init__(self, tactics: Sequence[str] | None = None, *, seed: int = 13):
        from redteam.tactics import MUTATION_TACTICS

        self.tactics = tuple(tactics or MUTATION_TACTICS)
        self.seed = seed

    def attacks(self, goal: Goal, tactic: str, n: int, *, round_no: int,
                start_index: int) -> list[Attack]:
        import random

        from redteam.mutations import mutate

        out = []
        for i in range(start_index, start_index + n):
            rng = random.Random(f"{self.seed}:{goal.id}:{tactic}:{round_no}:{i}")
            out.append(mutate(goal, tactic, rng, round_no=round_no, index=i))
        return out


class LLMSource:
    """A prompted attacker model (``redteam.attacker.LLMAttacker``) with its tactics."""

    name = "llm"
    uses_llm = True

    def __init__(self, attacker: Any, tactics: Sequence[str] | None = None):
        from redteam.tactics import LLM_TACTICS

        self.attacker = attacker
        self.tactics = tuple(tactics or LLM_TACTICS)

    def attacks(self, goal: Goal, tactic: str, n: int, *, round_no: int,
                start_index: int) -> Any:
        return self.attacker.attacks(goal, tactic, n, round_no=round_no,
                                     start_index=start_index)


class RedTeamLoop:
    """One run: goals, attack sources, a defender, benign prompts, a repairer, a journal."""

    def __init__(self, out: Path, *, goals: Sequence[Goal], sources: Sequence[AttackSource],
                 defender: Defender, base: Artifacts, repairer: Repairer | None,
                 benign: Sequence[BenignPrompt] = (), config: LoopConfig = LoopConfig(),
                 encoder: Encoder | None = None, builder_calls_per_input: int = 2,
                 log: Log = print):
        self.out = out
        self.goals = {g.id: g for g in goals}
        self.sources = list(sources)
        self.defender = defender
        self.base = base
        self.repairer = repairer
        self.benign = list(benign)
        self.config = config
        self.encoder = encoder
        self.calls_per_input = builder_calls_per_input
        self.log = log
        self.journal = Journal(out / JOURNAL)
        self.serving = base  # what the defender serves now

    async def _serve(self, artifacts: Artifacts) -> dict[str, Any]:
        status = await self.defender.reload(artifacts)
        self.serving = artifacts
        return status

    # -- journal views ----------------------------------------------------------------
    def _records(self, prefix: str) -> list[dict[str, Any]]:
        return [r for r in self.journal.records() if r["key"].startswith(prefix)]

    def _record(self, key: str) -> dict[str, Any] | None:
        return next((r for r in self.journal.records() if r["key"] == key), None)

    def served_after(self, round_no: int) -> Artifacts:
        """The artifacts in service once the repairs up to ``round_no`` are done."""
        current = self.base
        for n in range(1, round_no + 1):
            rec = self._record(f"repair:{n}")
            if rec is not None and rec.get("artifacts"):
                current = Artifacts.from_dict(rec["artifacts"])
        return current

    # -- one round ----------------------------------------------------------------------
    async def _generate(self, round_no: int) -> tuple[list[tuple[Goal, Attack]], dict[str, int]]:
        """The round's attacks; LLM-written ones are journaled and count against the budget."""
        cfg = self.config
        made = {r["key"]: r for r in self._records(f"gen:{round_no}:")}
        calls = sum(int(r.get("calls", 0)) for r in made.values())
        attacks: list[tuple[Goal, Attack]] = []
        skipped = 0
        plan = plan_round(list(self.goals.values()), self.sources, cfg.per_goal, round_no)
        if cfg.max_attacks:
            plan = plan[:cfg.max_attacks]
        for goal, src, tactic, index in plan:
            if not src.uses_llm:
                attacks.append((goal, await _call(src, goal, tactic, round_no=round_no,
                                                  index=index)))
                continue
            key = f"gen:{round_no}:{src.name}:{goal.id}:{tactic}:{index}"
            rec = made.get(key)
            if rec is None or rec.get("status") != "ok":
                if cfg.max_llm_calls and calls >= cfg.max_llm_calls:
                    skipped += 1
                    continue
                calls += 1
                try:
                    attack = await _call(src, goal, tactic, round_no=round_no, index=index)
                    rec = {"status": "ok", "calls": 1, "attack": _attack_dict(attack)}
                except Exception as exc:  # an attacker failure costs the call, not the run
                    rec = {"status": "failed", "calls": 1, "error": f"{type(exc).__name__}: "
                                                                     f"{exc}"[:300]}
                self.journal.append(key, rec)
            if rec.get("status") == "ok":
                attacks.append((goal, Attack(**rec["attack"])))
        return attacks, {"attacker_llm_calls": calls, "llm_skipped_budget": skipped,
                         "planned": len(plan)}

    async def _send(self, round_no: int, attacks: list[tuple[Goal, Attack]]) -> tuple[int, bool]:
        gateway = self.defender.gateway
        deadline = (time.monotonic() + self.config.max_minutes_per_round * 60
                    if self.config.max_minutes_per_round else None)

        async def ask(item: tuple[Goal, Attack]) -> dict[str, Any]:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeUp()
            goal, attack = item
            reply = await gateway.chat(attack.messages)
            verdict = await gateway.judge(attack.messages, reply.answer)
            return {"type": "attack", "round": round_no, "attack_id": attack.id,
                    "goal_id": goal.id, "goal": goal.text, "category": goal.category,
                    "holdout": goal.holdout, "tactic": attack.tactic, "source": attack.source,
                    "messages": attack.messages, "text": user_text(attack.messages),
                    "answer": reply.answer, "guidelines": reply.guidelines,
                    "safety_guidelines": reply.safety_guidelines, "risk": reply.risk,
                    "gate": reply.gate, "verdict": verdict["label"],
                    "verdict_scores": verdict["scores"],
                    **outcome(verdict["label"], reply.gate)}

        try:
            stats = await run_batch(attacks, ask, journal=self.journal,
                                    key=lambda it: f"attack:{round_no}:{it[1].source}:{it[1].id}",
                                    concurrency=self.config.concurrency,
                                    desc=f"round {round_no} attacks",
                                    show_progress=self.config.show_progress,
                                    retry_failed=True, fatal=(TimeUp,))
        except TimeUp:
            return len(self._records(f"attack:{round_no}:")), True
        return stats.skipped_done + stats.ok + stats.failed, False

    async def _benign(self, round_no: int) -> None:
        gateway = self.defender.gateway

        async def probe(p: BenignPrompt) -> dict[str, Any]:
            reply = await gateway.search(list(p.messages))
            return {"type": "benign", "round": round_no, "set": p.set, "gate": reply.gate,
                    "risk": reply.risk, "safety_guidelines": reply.safety_guidelines,
                    "over_trigger": reply.gate == "open" or bool(reply.safety_guidelines)}

        await run_batch(self.benign, probe, journal=self.journal,
                        key=lambda p: f"benign:{round_no}:{p.set}:{p.key}",
                        concurrency=self.config.concurrency, desc=f"round {round_no} benign",
                        show_progress=self.config.show_progress, retry_failed=True)

    async def attack_round(self, round_no: int) -> dict[str, Any]:
        """Attack, judge and probe the benign prompts; the round's record (journaled)."""
        key = f"round:{round_no}"
        done = self._record(key)
        if done is not None:
            return done
        started = time.monotonic()
        served = self.served_after(round_no - 1)
        if served != self.serving:  # a resumed run: serve what the last repair made
            await self._serve(served)
        attacks, budget = await self._generate(round_no)
        sent, timed_out = await self._send(round_no, attacks)
        await self._benign(round_no)
        records = self._records(f"attack:{round_no}:")
        metrics = round_metrics(records, self._records(f"benign:{round_no}:"),
                                encoder=self.encoder,
                                holdout_tactics=self.config.holdout_tactics)
        record = {"type": "round", "round": round_no, "metrics": metrics,
                  "budget": {**budget, "attacks_sent": sent, "stopped_by_time": timed_out,
                             "max_attacks": self.config.max_attacks,
                             "max_llm_calls": self.config.max_llm_calls,
                             "max_minutes_per_round": self.config.max_minutes_per_round},
                  "artifacts": served.as_dict(),
                  "seconds": round(time.monotonic() - started, 1)}
        self.journal.append(key, record)
        return {**record, "key": key}

    # -- repair ---------------------------------------------------------------------------
    def repair_inputs(self, round_no: int, budget_left: int | None) -> list[RepairInput]:
        """Attacks of the round that got through, on repair goals with repair tactics: one per
        distinct text, categories in turn, at most ``max_repair_inputs`` (and what the LLM
        budget allows)."""
        held = set(self.config.holdout_tactics)
        seen: set[str] = set()
        by_cat: dict[str, list[RepairInput]] = defaultdict(list)
        for r in self._records(f"attack:{round_no}:"):
            if r.get("status", "ok") != "ok" or not r["success"] or r["holdout"] \
                    or r["tactic"] in held or r["text"] in seen:
                continue
            seen.add(r["text"])
            by_cat[r["category"]].append(RepairInput(r["text"], r["category"], r["attack_id"]))
        cap = self.config.max_repair_inputs or len(seen)
        if budget_left is not None:
            cap = min(cap, max(0, budget_left) // max(1, self.calls_per_input))
        queues = list(by_cat.values())
        out: list[RepairInput] = []
        while len(out) < cap and any(queues):
            for q in queues:
                if q and len(out) < cap:
                    out.append(q.pop(0))
        return out

    async def repair_round(self, round_no: int, attack_calls: int) -> dict[str, Any]:
        """Turn round ``round_no``'s successes into new artifacts and reload the defender."""
        key = f"repair:{round_no}"
        done = self._record(key)
        if done is not None:
            return done
        current = self.served_after(round_no - 1)
        budget_left = (self.config.max_llm_calls - attack_calls if self.config.max_llm_calls
                       else None)
        inputs = self.repair_inputs(round_no, budget_left)
        if not inputs or self.repairer is None:
            record: dict[str, Any] = {
                "type": "repair", "round": round_no, "skipped": "no repairer" if inputs
                else "no successful attack to repair (or no LLM budget left)",
                "artifacts": current.as_dict()}
            self.journal.append(key, record)
            return record
        self.log(f"round {round_no}: repairing {len(inputs)} attacks that got through")
        # the build runs its own event loop: off this one, which serves an in-process gateway
        result = await asyncio.to_thread(self.repairer, current, inputs, round_no)
        status = await self._serve(result.artifacts)
        retrieved = await self._retrieved(inputs, set(result.summary.get("new_guideline_ids",
                                                                          [])))
        record = {"type": "repair", "round": round_no, "summary": result.summary,
                  "artifacts": result.artifacts.as_dict(),
                  "inputs": [dataclasses.asdict(i) for i in inputs],
                  "reload": {k: status.get(k) for k in ("ok", "library_version", "guidelines",
                                                        "seconds")},
                  "retrieved_new": retrieved}
        self.journal.append(key, record)
        return record

    async def _retrieved(self, inputs: Sequence[RepairInput], new_ids: set[str]
                         ) -> float | None:
        """The share of repaired attacks for which the reloaded gateway now retrieves one of
        the round's new guidelines."""
        if not inputs or not new_ids:
            return None
        hits = 0
        for i in inputs:
            reply = await self.defender.gateway.search([{"role": "user", "content": i.text}])
            hits += bool(new_ids & set(reply.guidelines))
        return round(hits / len(inputs), 4)

    # -- the run ----------------------------------------------------------------------------
    async def run(self) -> list[dict[str, Any]]:
        """All rounds (a repair after each but the last); the round records."""
        self.journal.open()
        try:
            rounds = []
            for n in range(1, self.config.rounds + 1):
                rec = await self.attack_round(n)
                rounds.append(rec)
                if n < self.config.rounds:
                    await self.repair_round(n, int(rec["budget"].get("attacker_llm_calls", 0)))
            return rounds
        finally:
            self.journal.close()


def summarise_journal(path: Path) -> dict[str, Any]:
    """Counts of the journal's records per kind and round, and its failed ones."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    failed = 0
    for r in Journal(path).records():
        kind, _, rest = r["key"].partition(":")
        rnd = rest.split(":", 1)[0]
        counts[kind][rnd] += 1
        failed += r.get("status") == "failed"
    return {"records": {k: dict(v) for k, v in counts.items()}, "failed": failed}

